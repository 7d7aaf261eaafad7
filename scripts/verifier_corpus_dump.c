/* The kernel's verifier test table (tools/testing/selftests/bpf/test_verifier.c
 * with verifier/*.c) as JSON lines, one per struct bpf_test, read by
 * compat_tests/verifier_corpus.py; built and run by scripts/gen_verifier_corpus.py.
 * The first line holds the BTF blob test_verifier.c's load_btf() loads. */
typedef unsigned int u32;	/* test_verifier.c uses the kernel's names */
typedef unsigned long long u64;
#define main test_verifier_main
#include "test_verifier.c"
#undef main

static void hex(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		printf("%02x", b[i]);
}

static void str(const char *s)
{
	putchar('"');
	for (; s && *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

#define FIX(name) do { \
	if (t->name[0]) { \
		printf("%s\"%s\":[", nf++ ? "," : "", #name); \
		for (int k = 0; k < MAX_FIXUPS && t->name[k]; k++) \
			printf("%s%d", k ? "," : "", t->name[k]); \
		printf("]"); \
	} } while (0)

int main(void)
{
	static const char *res[] = {"UNDEF", "ACCEPT", "REJECT", "VERBOSE_ACCEPT"};
	printf("{\"btf\":\"");
	struct btf_header hdr = { .magic = BTF_MAGIC, .version = BTF_VERSION, .hdr_len = sizeof(hdr),
		.type_len = sizeof(btf_raw_types), .str_off = sizeof(btf_raw_types), .str_len = sizeof(btf_str_sec) };
	hex(&hdr, sizeof(hdr)); hex(btf_raw_types, sizeof(btf_raw_types)); hex(btf_str_sec, sizeof(btf_str_sec));
	printf("\"}\n");
	for (size_t i = 0; i < ARRAY_SIZE(tests); i++) {
		struct bpf_test *t = &tests[i];
		int nf = 0;
		printf("{\"descr\":"); str(t->descr);
		printf(",\"prog_type\":%d,\"flags\":%d,\"expected_attach_type\":%d", t->prog_type ? t->prog_type : 1,
		       t->flags, t->expected_attach_type);
		printf(",\"result\":\"%s\",\"result_unpriv\":\"%s\",\"errstr\":", res[t->result], res[t->result_unpriv]);
		str(t->errstr); printf(",\"errstr_unpriv\":"); str(t->errstr_unpriv);
		printf(",\"fill_helper\":%s,\"kfunc\":", t->fill_helper ? "true" : "false"); str(t->kfunc);
		printf(",\"kfunc_fixups\":%d", t->fixup_kfunc_btf_id[0].kfunc != NULL);
		printf(",\"insns\":\""); hex(t->insns, probe_filter_length(t->insns) * 8); printf("\"");
		printf(",\"fixups\":{");
		FIX(fixup_map_hash_8b); FIX(fixup_map_hash_48b); FIX(fixup_map_hash_16b); FIX(fixup_map_array_48b);
		FIX(fixup_map_sockmap); FIX(fixup_map_sockhash); FIX(fixup_map_xskmap); FIX(fixup_map_stacktrace);
		FIX(fixup_prog1); FIX(fixup_prog2); FIX(fixup_map_in_map); FIX(fixup_cgroup_storage);
		FIX(fixup_percpu_cgroup_storage); FIX(fixup_map_spin_lock); FIX(fixup_map_array_ro);
		FIX(fixup_map_array_wo); FIX(fixup_map_array_small); FIX(fixup_sk_storage_map);
		FIX(fixup_map_event_output); FIX(fixup_map_reuseport_array); FIX(fixup_map_ringbuf);
		FIX(fixup_map_timer); FIX(fixup_map_kptr);
		printf("}");
		if (t->btf_types[0]) {
			int n = 0;
			while (n < MAX_BTF_TYPES && t->btf_types[n] != BTF_END_RAW)
				n++;
			struct btf_header h = hdr;
			h.type_len = h.str_off = n * 4;
			h.str_len = sizeof(t->btf_strings);
			printf(",\"prog_btf\":\""); hex(&h, sizeof(h)); hex(t->btf_types, n * 4);
			hex(t->btf_strings, sizeof(t->btf_strings)); printf("\"");
		}
		if (t->func_info_cnt) {
			printf(",\"func_info\":\""); hex(t->func_info, t->func_info_cnt * sizeof(t->func_info[0])); printf("\"");
		}
		printf("}\n");
	}
	return 0;
}

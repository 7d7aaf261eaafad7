/* SPDX-License-Identifier: MIT */
/*
 * What a probed file's ELF says of a site (for uprobe.c and syscall
 * site.c): the function symbol around a file offset (.symtab, else
 * .dynsym) and whether the offset is a USDT probe (.note.stapsdt). The
 * file is read from a private read-only mapping, every offset checked
 * against its size.
 */
#include <elf.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "bpf_rt.h"
#include "elf_probe.h"

/* [o, o + n) lies in a file of `size` bytes */
#define IN_FILE(o, n) ((uint64_t)(o) <= size && (uint64_t)(n) <= size - (uint64_t)(o))

/* The next section of a type (and name, if given) from index *from on. */
static const Elf64_Shdr *section(const unsigned char *f, uint64_t size, const char *want_name, uint32_t want_type,
				 unsigned *from)
{
	const Elf64_Ehdr *eh = (const void *)f;
	const Elf64_Shdr *sh = (const void *)(f + eh->e_shoff);
	const Elf64_Shdr *names = eh->e_shstrndx < eh->e_shnum ? &sh[eh->e_shstrndx] : NULL;

	for (unsigned i = *from; i < eh->e_shnum; i++) {
		if (sh[i].sh_type != want_type || !IN_FILE(sh[i].sh_offset, sh[i].sh_size))
			continue;
		if (want_name) {
			size_t len = strlen(want_name) + 1;
			if (!names || !IN_FILE(names->sh_offset, names->sh_size) || sh[i].sh_name >= names->sh_size ||
			    names->sh_size - sh[i].sh_name < len ||
			    memcmp(f + names->sh_offset + sh[i].sh_name, want_name, len))
				continue;
		}
		*from = i + 1;
		return &sh[i];
	}
	*from = eh->e_shnum;
	return NULL;
}

/* The file s names, mapped (checked to be the same dev, ino); its size. */
static const unsigned char *map_file(const struct attach_slot *s, uint64_t *size)
{
	int fd = open(s->path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	const unsigned char *f = MAP_FAILED;

	if (fd < 0)
		return NULL;
	if (!fstat(fd, &st) && st.st_ino == s->ino && st.st_dev == s->dev && st.st_size >= (off_t)sizeof(Elf64_Ehdr))
		/* shared: the kernel installs its uprobes' breakpoints in every
		 * private mapping of the file, exec or not (valid_vma), and adds
		 * to a USDT semaphore of the process for each */
		f = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	*size = (uint64_t)st.st_size;
	return f == MAP_FAILED ? NULL : f;
}

static size_t site_info_in(const unsigned char *f, uint64_t size, uint64_t off, uint64_t *before, int *usdt);

/* elf_probe.h */
size_t site_info(const struct attach_slot *s, uint64_t off, uint64_t *before, int *usdt)
{
	uint64_t size;
	const unsigned char *f = map_file(s, &size);

	*usdt = 0;
	if (!f)
		return 0;
	size_t found = site_info_in(f, size, off, before, usdt);
	munmap((void *)f, (size_t)size);
	return found;
}

static size_t site_info_in(const unsigned char *f, uint64_t size, uint64_t off, uint64_t *before, int *usdt)
{
	size_t found = 0;
	uint64_t vaddr = UINT64_MAX;
	const Elf64_Ehdr *eh = (const void *)f;
	const Elf64_Shdr *sh;
	unsigned from;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
	    !IN_FILE(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr)) ||
	    !IN_FILE(eh->e_shoff, (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr)))
		goto out;
	const Elf64_Phdr *ph = (const void *)(f + eh->e_phoff);
	for (unsigned i = 0; i < eh->e_phnum; i++)
		if (ph[i].p_type == PT_LOAD && off >= ph[i].p_offset && off - ph[i].p_offset < ph[i].p_filesz)
			vaddr = off - ph[i].p_offset + ph[i].p_vaddr;
	if (vaddr == UINT64_MAX)
		goto out;
	for (uint32_t want = SHT_SYMTAB; want && !found; want = want == SHT_SYMTAB ? SHT_DYNSYM : 0) {
		for (from = 0; !found && (sh = section(f, size, NULL, want, &from));) {
			const Elf64_Sym *sym = (const void *)(f + sh->sh_offset);
			if (sh->sh_entsize != sizeof(*sym))
				continue;
			for (uint64_t k = 0; k < sh->sh_size / sizeof(*sym); k++) {
				unsigned t = ELF64_ST_TYPE(sym[k].st_info);
				if ((t == STT_FUNC || t == STT_GNU_IFUNC) && sym[k].st_size && sym[k].st_shndx != SHN_UNDEF &&
				    vaddr >= sym[k].st_value && vaddr - sym[k].st_value < sym[k].st_size) {
					*before = vaddr - sym[k].st_value;
					found = sym[k].st_size;
					break;
				}
			}
		}
	}
	/* stapsdt notes: name "stapsdt", type 3, desc = pc, base, semaphore,
	 * strings; pc moves with .stapsdt.base (prelink), as libbpf/bcc read it */
	from = 0;
	const Elf64_Shdr *base = section(f, size, ".stapsdt.base", SHT_PROGBITS, &from);
	from = 0;
	while (!*usdt && (sh = section(f, size, ".note.stapsdt", SHT_NOTE, &from))) {
		for (uint64_t o = 0; o + sizeof(Elf64_Nhdr) <= sh->sh_size;) {
			const Elf64_Nhdr *n = (const void *)(f + sh->sh_offset + o);
			uint64_t name = o + sizeof(*n), desc = name + ((n->n_namesz + 3) & ~3u);
			o = desc + ((n->n_descsz + 3) & ~3u);
			if (o > sh->sh_size)
				break;
			if (n->n_type != 3 || n->n_namesz != 8 || memcmp(f + sh->sh_offset + name, "stapsdt", 8) ||
			    n->n_descsz < 24)
				continue;
			uint64_t pc, sbase;
			memcpy(&pc, f + sh->sh_offset + desc, 8);
			memcpy(&sbase, f + sh->sh_offset + desc + 8, 8);
			if (base && sbase)
				pc += base->sh_addr - sbase;
			if (pc == vaddr) {
				*usdt = 1;
				break;
			}
		}
	}
out:
	return found;
}

#undef IN_FILE

/* The files stay mapped (the follower's, a few): a process's syscall sites
 * are in a few files, each opened once, not once a site. */
size_t agent_func_at(const struct attach_slot *s, uint64_t *before)
{
	static struct { uint64_t dev, ino, size; const unsigned char *f; } cache[8];
	static unsigned next;
	int usdt = 0;
	unsigned k;

	for (k = 0; k < BPFSHIM_ARRAY_SIZE(cache); k++)
		if (cache[k].f && cache[k].dev == s->dev && cache[k].ino == s->ino)
			break;
	if (k == BPFSHIM_ARRAY_SIZE(cache)) {
		uint64_t size;
		const unsigned char *f = map_file(s, &size);
		if (!f)
			return 0;
		k = next++ % BPFSHIM_ARRAY_SIZE(cache);
		if (cache[k].f)
			munmap((void *)cache[k].f, (size_t)cache[k].size);
		cache[k].dev = s->dev;
		cache[k].ino = s->ino;
		cache[k].size = size;
		cache[k].f = f;
	}
	return site_info_in(cache[k].f, cache[k].size, s->offset, before, &usdt);
}

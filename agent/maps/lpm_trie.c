/* SPDX-License-Identifier: MIT */
/*
 * BPF_MAP_TYPE_LPM_TRIE, as kernel/bpf/lpm_trie.c, node for node: the same
 * trie shape (intermediate nodes with exactly two children), so lookups,
 * errno values and the post-order of get_next_key are the kernel's.
 *
 * Nodes come from a pool of 2 * max_entries + 2 in the segment (real nodes,
 * intermediate nodes, one spare for a replacement), taken from a free list
 * or, never used yet, from a bump index (so untouched pages stay unmapped).
 * Every operation runs under the map's shm lock. A new node is filled
 * before it is linked; a writer killed mid-update at worst leaks a node.
 *
 * type_state: [0] root (index + 1), [1] n_entries, [2] bump, [3] free list,
 *             [4] node size, [5] pool size.
 */
#include <errno.h>
#include <string.h>
#include "map.h"

#define LPM_TREE_NODE_FLAG_IM 1
#define LPM_DATA_SIZE_MAX 256
#define LPM_DATA_SIZE_MIN 1
#define LPM_KEY_SIZE_MAX (4 + LPM_DATA_SIZE_MAX)
#define LPM_KEY_SIZE_MIN (4 + LPM_DATA_SIZE_MIN)
#define LPM_NODE_HDR_KERNEL 24 /* sizeof(struct lpm_trie_node) */
#define LPM_VAL_SIZE_MAX ((1u << 22) - LPM_DATA_SIZE_MAX - LPM_NODE_HDR_KERNEL)
#define LPM_VAL_SIZE_MIN 1
#define LPM_CREATE_FLAG_MASK (BPF_F_NO_PREALLOC | SHM_BPF_F_ACCESS_MASK | BPF_F_NUMA_NODE)

struct node {
	uint32_t child[2]; /* index + 1 */
	uint32_t prefixlen;
	uint32_t flags;
	/* data[data_size], padded to 8; value */
};

#define ROOT(h) ((h)->type_state[0])
#define NENT(h) ((h)->type_state[1])
#define BUMP(h) ((h)->type_state[2])
#define FREEL(h) ((h)->type_state[3])
#define NSIZE(h) ((h)->type_state[4])
#define POOL(h) ((h)->type_state[5])

static uint64_t node_size(const struct shm_map_attr *a)
{
	return sizeof(struct node) + BPFSHIM_ROUND_UP((uint64_t)a->key_size - 4, 8) +
	       BPFSHIM_ROUND_UP((uint64_t)a->value_size, 8);
}

static uint64_t pool_size(const struct shm_map_attr *a)
{
	return 2 * (uint64_t)a->max_entries + 2;
}

/* trie_alloc() checks */
static int trie_alloc_check(const struct shm_map_attr *a)
{
	if (a->max_entries == 0 || !(a->map_flags & BPF_F_NO_PREALLOC) ||
	    (a->map_flags & ~LPM_CREATE_FLAG_MASK) || !shm_map_flags_access_ok(a->map_flags) ||
	    a->key_size < LPM_KEY_SIZE_MIN || a->key_size > LPM_KEY_SIZE_MAX ||
	    a->value_size < LPM_VAL_SIZE_MIN || a->value_size > LPM_VAL_SIZE_MAX)
		return -EINVAL;
	if (pool_size(a) * node_size(a) > (1ull << 40))
		return -ENOMEM;
	return 0;
}

static uint64_t trie_area(const struct shm_map_attr *a)
{
	return pool_size(a) * node_size(a);
}

static int trie_init(struct shm_map *m)
{
	NSIZE(m->hdr) = node_size(&m->hdr->attr);
	POOL(m->hdr) = pool_size(&m->hdr->attr);
	return 0;
}

static uint32_t data_size(const struct shm_map *m) { return m->hdr->attr.key_size - 4; }
static uint32_t max_prefixlen(const struct shm_map *m) { return data_size(m) * 8; }

/* Node indices are read from the segment, which any holder of the map fd
 * can write: trie_ok() checks the header at each entry point, NODE_OK each
 * index before it is followed, and walks are bounded by the pool. */
#define NODE_OK(m, i) ((i) >= 1 && (i) <= POOL((m)->hdr))

static int trie_ok(const struct shm_map *m)
{
	const struct shm_map_hdr *h = m->hdr;

	return shm_map_geometry_ok(m) && NSIZE(h) == node_size(&h->attr) && POOL(h) == pool_size(&h->attr) &&
	       BUMP(h) <= POOL(h) && (!ROOT(h) || NODE_OK(m, ROOT(h))) && (!FREEL(h) || NODE_OK(m, FREEL(h)));
}

static struct node *N(const struct shm_map *m, uint32_t idx1)
{
	return (struct node *)((char *)shm_map_data(m) + (uint64_t)(idx1 - 1) * NSIZE(m->hdr));
}

static uint8_t *ndata(struct node *n) { return (uint8_t *)(n + 1); }

static void *nvalue(const struct shm_map *m, struct node *n)
{
	return (char *)(n + 1) + BPFSHIM_ROUND_UP(data_size(m), 8);
}

static uint32_t node_alloc(struct shm_map *m)
{
	struct shm_map_hdr *h = m->hdr;
	uint32_t i = (uint32_t)FREEL(h);

	if (i) {
		if (!NODE_OK(m, i))
			return 0;     /* a corrupted free list: nothing to take */
		FREEL(h) = N(m, i)->child[0];
		return i;
	}
	if (BUMP(h) >= POOL(h))
		return 0;
	return (uint32_t)++BUMP(h);
}

static void node_free(struct shm_map *m, uint32_t i)
{
	N(m, i)->child[0] = (uint32_t)FREEL(m->hdr);
	FREEL(m->hdr) = i;
}

/* extract_bit() */
static int extract_bit(const uint8_t *data, uint32_t index)
{
	return !!(data[index / 8] & (1 << (7 - (index % 8))));
}

/* longest_prefix_match(): leading bits node and key share, up to the
 * shorter of the two prefixes. */
static uint32_t longest_prefix_match(const struct shm_map *m, struct node *n, const void *key)
{
	uint32_t kplen;
	const uint8_t *kd = (const uint8_t *)key + 4;
	uint32_t limit, prefixlen = 0;

	memcpy(&kplen, key, 4);
	limit = n->prefixlen < kplen ? n->prefixlen : kplen;
	for (uint32_t i = 0; i < data_size(m) && prefixlen < limit; i++) {
		uint8_t b = ndata(n)[i] ^ kd[i];
		if (b) {
			prefixlen += (uint32_t)__builtin_clz((unsigned)b) - 24;
			break;
		}
		prefixlen += 8;
	}
	return prefixlen < limit ? prefixlen : limit;
}

/* trie_lookup_elem(): the value of the longest matching prefix. */
static struct node *trie_lookup(struct shm_map *m, const void *key)
{
	const uint8_t *kd = (const uint8_t *)key + 4;
	struct node *found = NULL;

	if (*(const uint32_t *)key > max_prefixlen(m))
		return NULL;
	for (uint32_t i = (uint32_t)ROOT(m->hdr), steps = 0; i;) {
		if (!NODE_OK(m, i) || ++steps > max_prefixlen(m) + 1)
			return NULL;
		struct node *n = N(m, i);
		uint32_t matchlen = longest_prefix_match(m, n, key);
		if (matchlen == max_prefixlen(m)) {
			found = n;
			break;
		}
		if (matchlen < n->prefixlen)
			break;
		if (!(n->flags & LPM_TREE_NODE_FLAG_IM))
			found = n;
		i = n->child[extract_bit(kd, n->prefixlen)];
	}
	return found;
}

static int trie_sys_lookup(struct shm_map *m, const void *key, void *value, uint64_t flags)
{
	struct node *n;

	shm_lock(&m->hdr->lock);
	if (!trie_ok(m)) {
		shm_unlock(&m->hdr->lock);
		return -EFAULT;
	}
	n = trie_lookup(m, key);
	if (n)
		shm_copy_value(m, value, nvalue(m, n));
	shm_unlock(&m->hdr->lock);
	return n ? 0 : -ENOENT;
}

static void *trie_lookup_ptr(struct shm_map *m, const void *key)
{
	struct node *n;

	shm_lock(&m->hdr->lock);
	n = trie_ok(m) ? trie_lookup(m, key) : NULL;
	shm_unlock(&m->hdr->lock);
	return n ? nvalue(m, n) : NULL;
}

/* trie_check_add_elem() */
static int check_add(struct shm_map *m, uint64_t flags)
{
	if (flags == BPF_EXIST)
		return -ENOENT;
	if (NENT(m->hdr) == m->hdr->attr.max_entries)
		return -ENOSPC;
	NENT(m->hdr)++;
	return 0;
}

/* *slot, or the root when slot is NULL */
static void slot_set(struct shm_map *m, uint32_t *slot, uint32_t v)
{
	if (slot)
		__atomic_store_n(slot, v, __ATOMIC_RELEASE);
	else
		__atomic_store_n(&ROOT(m->hdr), (uint64_t)v, __ATOMIC_RELEASE);
}

/* The walk of trie_update_elem() and trie_delete_elem(), under the lock:
 * down from the root as far as the key matches. Where it stops: the node (0
 * at an empty slot), how much of the key it matches, the slot that holds it
 * (NULL: the root), its parent and the parent's slot. -EFAULT for a node
 * outside the segment or a walk longer than any prefix. */
struct walk {
	uint32_t node, matchlen, parent;
	uint32_t *slot, *slot2;
};

static int walk_down(struct shm_map *m, const void *key, uint32_t kplen, struct walk *w)
{
	const uint8_t *kd = (const uint8_t *)key + 4;

	*w = (struct walk){ 0 };
	for (uint32_t steps = 0; (w->node = w->slot ? *w->slot : (uint32_t)ROOT(m->hdr)); ) {
		if (!NODE_OK(m, w->node) || ++steps > max_prefixlen(m) + 1)
			return -EFAULT;
		struct node *n = N(m, w->node);
		w->matchlen = longest_prefix_match(m, n, key);
		if (n->prefixlen != w->matchlen || n->prefixlen == kplen)
			break;
		w->parent = w->node;
		w->slot2 = w->slot;
		w->slot = &n->child[extract_bit(kd, n->prefixlen)];
	}
	return 0;
}

/* trie_update_elem() */
static int trie_update(struct shm_map *m, const void *key, const void *value, uint64_t flags)
{
	struct shm_map_hdr *h = m->hdr;
	const uint8_t *kd = (const uint8_t *)key + 4;
	uint32_t kplen, nn, im;
	struct walk w;
	int ret = 0;

	memcpy(&kplen, key, 4);
	if (flags > BPF_EXIST)
		return -EINVAL;
	if (kplen > max_prefixlen(m))
		return -EINVAL;
	shm_lock(&h->lock);
	nn = 0;
	if (!trie_ok(m)) {
		ret = -EFAULT;
		goto out;
	}
	nn = node_alloc(m);
	if (!nn) {
		ret = -ENOMEM;
		goto out;
	}
	struct node *new_node = N(m, nn);
	new_node->child[0] = new_node->child[1] = 0;
	new_node->prefixlen = kplen;
	new_node->flags = 0;
	memcpy(ndata(new_node), kd, data_size(m));
	shm_copy_value(m, nvalue(m, new_node), value);
	shm_clear_special(m, nvalue(m, new_node));

	if ((ret = walk_down(m, key, kplen, &w)))
		goto out;
	if (!w.node) {
		ret = check_add(m, flags);
		if (!ret) {
			slot_set(m, w.slot, nn);
			nn = 0;
		}
		goto out;
	}
	struct node *n = N(m, w.node);
	if (n->prefixlen == w.matchlen) {
		if (!(n->flags & LPM_TREE_NODE_FLAG_IM)) {
			if (flags == BPF_NOEXIST) {
				ret = -EEXIST;
				goto out;
			}
		} else {
			ret = check_add(m, flags);
			if (ret)
				goto out;
		}
		new_node->child[0] = n->child[0];
		new_node->child[1] = n->child[1];
		slot_set(m, w.slot, nn);
		nn = 0;
		node_free(m, w.node);
		goto out;
	}
	ret = check_add(m, flags);
	if (ret)
		goto out;
	/* the new node is an ancestor of node: insert it in between */
	if (w.matchlen == kplen) {
		new_node->child[extract_bit(ndata(n), w.matchlen)] = w.node;
		slot_set(m, w.slot, nn);
		nn = 0;
		goto out;
	}
	im = node_alloc(m);
	if (!im) {
		NENT(h)--;
		ret = -ENOMEM;
		goto out;
	}
	struct node *imn = N(m, im);
	imn->prefixlen = w.matchlen;
	imn->flags = LPM_TREE_NODE_FLAG_IM;
	memcpy(ndata(imn), ndata(n), data_size(m));
	if (extract_bit(kd, w.matchlen)) {
		imn->child[0] = w.node;
		imn->child[1] = nn;
	} else {
		imn->child[0] = nn;
		imn->child[1] = w.node;
	}
	slot_set(m, w.slot, im);
	nn = 0;
out:
	if (nn)
		node_free(m, nn);
	shm_unlock(&h->lock);
	return ret;
}

/* trie_delete_elem() */
static int trie_delete(struct shm_map *m, const void *key)
{
	struct shm_map_hdr *h = m->hdr;
	uint32_t kplen;
	struct walk w;   /* slot, slot2: the kernel's trim, trim2 */
	int ret = 0;

	memcpy(&kplen, key, 4);
	if (kplen > max_prefixlen(m))
		return -EINVAL;
	shm_lock(&h->lock);
	if (!trie_ok(m)) {
		ret = -EFAULT;
		goto out;
	}
	if ((ret = walk_down(m, key, kplen, &w)))
		goto out;
	struct node *n = w.node ? N(m, w.node) : NULL;
	if (!n || n->prefixlen != kplen || n->prefixlen != w.matchlen || (n->flags & LPM_TREE_NODE_FLAG_IM)) {
		ret = -ENOENT;
		goto out;
	}
	NENT(h)--;
	/* two children: it becomes an intermediate node */
	if (n->child[0] && n->child[1]) {
		n->flags |= LPM_TREE_NODE_FLAG_IM;
		goto out;
	}
	/* a leaf under an intermediate parent: the parent goes too and its
	 * other child moves up */
	struct node *p = w.parent ? N(m, w.parent) : NULL;
	if (p && (p->flags & LPM_TREE_NODE_FLAG_IM) && !n->child[0] && !n->child[1]) {
		uint32_t other = w.node == p->child[0] ? p->child[1] : p->child[0];
		slot_set(m, w.slot2, other);
		node_free(m, w.parent);
		node_free(m, w.node);
		goto out;
	}
	slot_set(m, w.slot, n->child[0] ? n->child[0] : n->child[1]);
	node_free(m, w.node);
out:
	shm_unlock(&h->lock);
	return ret;
}

/* trie_get_next_key(): post-order, more specific prefixes first. */
static int trie_get_next_key(struct shm_map *m, const void *key, void *next)
{
	struct shm_map_hdr *h = m->hdr;
	uint32_t stack[LPM_DATA_SIZE_MAX * 8 + 1];
	int sp = -1, err = 0;
	uint32_t search_root, node, next_node = 0, kplen = 0, matchlen = 0;

	shm_lock(&h->lock);
	if (!trie_ok(m)) {
		err = -EFAULT;
		goto out;
	}
	search_root = (uint32_t)ROOT(h);
	if (!search_root) {
		err = -ENOENT;
		goto out;
	}
	if (key)
		memcpy(&kplen, key, 4);
	if (!key || kplen > max_prefixlen(m))
		goto find_leftmost;
	const uint8_t *kd = (const uint8_t *)key + 4;
	for (node = search_root; node;) {
		if (!NODE_OK(m, node) || sp + 1 >= (int)BPFSHIM_ARRAY_SIZE(stack)) {
			err = -EFAULT;
			goto out;
		}
		struct node *n = N(m, node);
		stack[++sp] = node;
		matchlen = longest_prefix_match(m, n, key);
		if (n->prefixlen != matchlen || n->prefixlen == kplen)
			break;
		node = n->child[extract_bit(kd, n->prefixlen)];
	}
	if (!node || N(m, node)->prefixlen != matchlen || (N(m, node)->flags & LPM_TREE_NODE_FLAG_IM))
		goto find_leftmost;
	node = stack[sp];
	while (sp > 0) {
		uint32_t parent = stack[sp - 1];
		struct node *p = N(m, parent);
		if (p->child[0] == node) {
			search_root = p->child[1];
			if (search_root)
				goto find_leftmost;
		}
		if (!(p->flags & LPM_TREE_NODE_FLAG_IM)) {
			next_node = parent;
			goto do_copy;
		}
		node = parent;
		sp--;
	}
	err = -ENOENT;
	goto out;
find_leftmost:
	node = search_root;
	for (uint32_t steps = 0; node;) {
		if (!NODE_OK(m, node) || ++steps > max_prefixlen(m) + 1) {
			err = -EFAULT;
			goto out;
		}
		struct node *n = N(m, node);
		if (n->flags & LPM_TREE_NODE_FLAG_IM) {
			node = n->child[0];
		} else {
			next_node = node;
			node = n->child[0];
			if (!node)
				node = n->child[1];
		}
	}
do_copy:
	if (!next_node) {
		err = -ENOENT;
		goto out;
	}
	memcpy(next, &N(m, next_node)->prefixlen, 4);
	memcpy((char *)next + 4, ndata(N(m, next_node)), data_size(m));
out:
	shm_unlock(&h->lock);
	return err;
}

const struct shm_map_ops trie_map_ops = {
	.alloc_check = trie_alloc_check,
	.facts = { .batch = SHM_BATCH_LOOKUP | SHM_BATCH_UPDATE | SHM_BATCH_DELETE },
	.area_size = trie_area,
	.init = trie_init,
	.sys_lookup = trie_sys_lookup,
	.sys_update = trie_update,
	.sys_delete = trie_delete,
	.get_next_key = trie_get_next_key,
	.lookup_ptr = trie_lookup_ptr,
	.prog_update = trie_update,
	.prog_delete = trie_delete,
};

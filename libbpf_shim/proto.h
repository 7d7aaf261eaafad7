/* SPDX-License-Identifier: MIT */
/*
 * Wire protocol between the shim (in every loader) and the per-user server.
 * This file is also read by cffi (syscall_server/_native.py): keep it to
 * plain enums and structs.
 *
 * Transport: one AF_UNIX SOCK_SEQPACKET connection per process; a message is
 * `struct shim_msg` followed by `len` payload bytes (at most SHIM_MSG_MAX).
 *
 * One request at a time per connection. The shim sends SHIM_OP_BPF (or
 * another request op); the server may then ask the shim to read or write the
 * caller's memory (SHIM_OP_READ/READSTR/WRITE — the shim does it fault-safely
 * and answers SHIM_OP_MEM or SHIM_OP_MEM_ERR), and ends with SHIM_OP_DONE:
 * a = return value, b = errno (0 on success), payload = struct shim_done +
 * fd metadata + an optional message for stderr; new fds ride along as
 * SCM_RIGHTS in the same message. The server's handler decides which
 * pointer to read; the shim answers only inside the ranges the request's
 * attr names (uwin.c) and EFAULT elsewhere, so a server is never trusted
 * with the rest of the caller's memory.
 */
#ifndef BPFSHIM_PROTO_H
#define BPFSHIM_PROTO_H

enum shim_op {
	/* shim -> server requests */
	SHIM_OP_BPF = 1,           /* a = cmd, b = attr size; payload = u64 uattr + attr bytes */
	SHIM_OP_RELEASE = 2,       /* a = kind, b = id: this process dropped its last fd; no reply */
	SHIM_OP_HOLD = 3,          /* payload = u32 kind,id pairs this process holds (after fork); no reply */
	SHIM_OP_IDENTIFY = 4,      /* SCM_RIGHTS: one fd; reply DONE with its fd meta or ret -1 */
	SHIM_OP_PERF_EVENT_OPEN = 5, /* a = pid, b = cpu | (group_fd << 32); payload = u64 uattr, u64 flags.
	                              * DONE gives the event fd (ret) and its ring segment */
	SHIM_OP_CTL = 6,           /* a = control request (enum shim_ctl), payload = args */
	SHIM_OP_MODE = 7,          /* a = enum shim_mode of this process (after connecting); no reply */
	/* server -> shim, during a request */
	SHIM_OP_READ = 16,         /* a = address, b = length */
	SHIM_OP_READSTR = 17,      /* a = address, b = max length; reply without the NUL */
	SHIM_OP_WRITE = 18,        /* a = address; payload = bytes */
	SHIM_OP_DONE = 19,         /* a = ret, b = errno; payload = struct shim_done ... */
	SHIM_OP_FDGET = 20,        /* a = fd number in the caller: reply MEM with a
	                            * struct shim_fd_meta, followed for an fd the shim
	                            * does not know (kind 0) by a struct shim_fd_ident;
	                            * or MEM_ERR EBADF */
	/* shim -> server replies */
	SHIM_OP_MEM = 32,          /* payload = bytes read (READ/READSTR) or empty (WRITE) */
	SHIM_OP_MEM_ERR = 33,      /* a = errno (EFAULT; E2BIG for READSTR without NUL) */
};

enum shim_obj_kind {
	SHIM_OBJ_NONE = 0,
	SHIM_OBJ_MAP = 1,
	SHIM_OBJ_PROG = 2,
	SHIM_OBJ_LINK = 3,
	SHIM_OBJ_BTF = 4,
	SHIM_OBJ_PERF_EVENT = 5,
};

/* Where a process's bpf() and perf_event_open() go (SHIM_OP_MODE). */
enum shim_mode {
	SHIM_MODE_USER = 0,        /* answered by bpfshim: the default */
	SHIM_MODE_KERNEL = 1,      /* hybrid (BPFSHIM_KERNEL=1): the kernel's objects (hybrid.c) */
};

/* Control requests (SHIM_OP_CTL a=) the shim needs besides bpf(). */
enum shim_ctl {
	SHIM_CTL_PIN_UNLINK = 1,   /* payload = path: unlink a pin (or empty dir) */
	SHIM_CTL_PIN_STAT = 2,     /* payload = path: ret 1 dir, 2 object, -ENOENT */
	SHIM_CTL_PIN_MKDIR = 3,    /* payload = path */
	SHIM_CTL_PIN_LIST = 4,     /* payload = dir path: DONE message = the tree in pre-order, "d PATH\n" / "f PATH\n" */
	SHIM_CTL_FDINFO = 5,       /* b = fd's open flags; payload = u32 kind, id: DONE message = fdinfo text */
	SHIM_CTL_STATUS = 6,
	SHIM_CTL_PERF_IOCTL = 8,   /* payload = u32 event id, u32 request, u64 arg (SET_BPF: prog id) */
	SHIM_CTL_PERF_GET = 7,     /* b = perf event id: its eventfd (ret) and ring fd, for producers */       /* DONE message = JSON of the live objects (bpfshim status) */
	SHIM_CTL_RINGBUF_WAKEFD = 9, /* b = ringbuf map id: the eventfd its producers signal (ret, SHIM_FD_WAKE) */
	SHIM_CTL_TRACEFS_READ = 10,  /* payload = path under the tracefs root: DONE message = the file, or -ENOENT */
	SHIM_CTL_SYNC = 11,        /* answered at once: every message sent before it has been handled
	                            * (a SHIM_OP_RELEASE, which has no reply) */
	/* Hybrid mode: the kernel map behind a bpfshim map a twin program uses
	 * (libbpf_shim/hybrid.c). SET: b = that map's id, SCM_RIGHTS the kernel
	 * map's fd, kept by the server while the map lives; FD: b = the map id,
	 * the kernel map's fd (ret, SHIM_FD_KERNEL), ENOENT for other maps,
	 * ESTALE when a restarted server lost it. */
	SHIM_CTL_KMAP_SET = 12,
	SHIM_CTL_KMAP_FD = 13,
	/* The attach table's generation bumped with no slot changed: every
	 * agent makes a pass (its programs prepared again: the rings and tail
	 * call targets a loader put in a map after attaching), and the loader's
	 * request returns once they have (attach_sync.c), as the kernel's map
	 * update is seen by the next event at once. */
	SHIM_CTL_TABLE_TOUCH = 14,
};

struct shim_msg {
	uint32_t op;
	uint32_t len;
	int64_t a;
	int64_t b;
};

/* What the shim needs to know about an object fd the server hands out. */
struct shim_fd_meta {
	uint32_t kind;             /* enum shim_obj_kind */
	uint32_t id;
	uint32_t f_flags;          /* BPF_F_RDONLY / BPF_F_WRONLY of this fd;
	                            * SHIM_FD_RING: the ring segment of a perf event;
	                            * SHIM_FD_WAKE: a ringbuf's wake-up eventfd */
	uint32_t _pad;
	uint64_t seg_size;         /* maps: bytes of the memfd segment */
};

/* After the meta, in the FDGET reply for an fd the shim's table does not
 * know (kind 0): what the server identifies it by. */
struct shim_fd_ident {
	uint64_t dev;
	uint64_t ino;
	uint64_t eventfd_id;       /* eventfds: their fdinfo eventfd-id */
};

struct shim_done {
	uint32_t nfds;             /* fds in SCM_RIGHTS = metas following */
	uint32_t msg_len;          /* bytes of message (after the metas) */
	int32_t ret_fd;            /* >= 0: the return value is the number the
	                            * caller got for fds[ret_fd] */
	uint32_t _pad;
};

/*
 * A loaded program, as the server publishes it: the program's fd is a memfd
 * holding this image, so any process with the fd can run the program
 * without asking the server (PROG_TEST_RUN in the loader, probes in
 * targets). Instructions are relocated (bpf_rt.h: map references are
 * BPF_PSEUDO_MAP_IDX/_IDX_VALUE into the map id table).
 */
struct shim_prog_image {
	uint32_t magic;            /* SHIM_PROG_MAGIC */
	uint32_t version;
	uint32_t id;
	uint32_t prog_type;
	uint32_t expected_attach_type;
	uint32_t insn_cnt;
	uint32_t nr_maps;
	uint32_t jited_len;        /* AOT blob bytes; 0 = interpreter only */
	uint64_t insns_off;
	uint64_t maps_off;         /* u32 map ids */
	uint64_t jited_off;
	char name[16];
	uint32_t gpl;
	uint32_t stats_off;        /* a page of struct bpf_prog_counts every process
	                            * running the program counts in (0: none) */
};

enum {
	SHIM_FD_RING = 0x80000000,
	SHIM_FD_WAKE = 0x40000000,    /* an object's wake-up eventfd: not an object fd */
	SHIM_FD_KERNEL = 0x20000000,  /* a kernel object's fd (SHIM_CTL_KMAP_FD): not a bpfshim fd */
	SHIM_PROG_MAGIC = 0x47525042, /* "BPRG" */
	SHIM_MSG_MAX = 65536,
	SHIM_PROTO_VERSION = 1,
};

#endif

/* SPDX-License-Identifier: MIT */
/* What a probed file's ELF says of a site (elf_probe.c). */
#ifndef BPFSHIM_ELF_PROBE_H
#define BPFSHIM_ELF_PROBE_H

#include <stddef.h>
#include <stdint.h>
#include "attach_table.h"

/* What the probed file says of the site at file offset `off`, for the hook
 * engine to tell a function entry from a site inside a function:
 * returns the size of the function symbol (.symtab, else .dynsym) whose
 * code holds it and sets *before to the site's distance from the
 * function's start; 0 when no symbol covers it. *usdt is set when the site
 * is a USDT probe (a .note.stapsdt location): such a site is inside some
 * function whatever the symbols say. */
size_t site_info(const struct attach_slot *s, uint64_t off, uint64_t *before, int *usdt);

#endif

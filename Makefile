# Builds the two native libraries into syscall_server/_native/:
#   libbpfshim.so       the preload library: libbpf_shim/ (loader side) + agent/ (runtime)
#   libbpfshim_core.so  agent/ only (maps, engines, helpers), loaded by the server through cffi
#   libbpfshim_boot.so  agent/boot/: what `bpfshim attach` injects; it dlopens libbpfshim.so
# Each of the first two has one constructor, libbpf_shim/start/preload.c or agent/start/core.c:
# the start-up sequence (agent/start/start.h).
# Sources are picked up by wildcard: a new .c file under these folders needs no edit here.
CC      ?= cc
OUT     := syscall_server/_native
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -fPIC -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter \
           -Wno-missing-field-initializers -D_GNU_SOURCE -Iagent/include/uapi -Iagent -Iagent/rt -Iagent/maps -Ilibbpf_shim -Iagent/start \
           -fno-strict-aliasing -pthread -ftls-model=initial-exec
LDLIBS  := -ldl -lpthread -lrt
# The interpreter the shim starts the server with (baked in; BPFSHIM_PYTHON overrides at run time).
PYTHON  ?= $(if $(wildcard .venv/bin/python),$(abspath .venv/bin/python),python3)
CFLAGS  += -Ibuild/gen

AGENT_SRC := $(sort $(wildcard agent/*.c agent/rt/*.c agent/maps/*.c agent/helpers/*.c agent/hook/*.c agent/syscall/*.c))
SHIM_SRC  := $(sort $(wildcard libbpf_shim/*.c))
# The server's copy of the runtime (libbpfshim_core.so): no agent (the hooks,
# the attach-table follower, syscall tracing) and none of the library's own
# threads or the agents' registry; rt.h's SUD_INTERNAL_* are no-ops there.
AGENT_ONLY := agent/uprobe.c agent/elf_probe.c agent/rt_thread.c agent/rt/attach_ack.c $(wildcard agent/hook/*.c agent/syscall/*.c)
CORE_SRC  := $(filter-out $(AGENT_ONLY),$(AGENT_SRC))
HDRS      := $(wildcard agent/start/*.h agent/*.h agent/rt/*.h agent/maps/*.h agent/helpers/*.h agent/hook/*.h agent/syscall/*.h libbpf_shim/*.h agent/include/uapi/linux/*.h)
AGENT_OBJ := $(patsubst %.c,build/%.o,$(AGENT_SRC))
SHIM_OBJ  := $(patsubst %.c,build/%.o,$(SHIM_SRC))

# Headers the server reads at run time (cffi cdefs, the task layout), next to
# the libraries so that an installed package carries them.
RT_HEADERS := libbpf_shim/proto.h agent/attach_table.h agent/task_layout.h agent/maps/map_facts.h
RT_HEADERS_OUT := $(addprefix $(OUT)/include/,$(notdir $(RT_HEADERS)))

all: $(OUT)/libbpfshim.so $(OUT)/libbpfshim_core.so $(OUT)/libbpfshim_boot.so $(RT_HEADERS_OUT)

$(OUT)/include/%.h: libbpf_shim/%.h
	@mkdir -p $(dir $@)
	cp $< $@

$(OUT)/include/%.h: agent/%.h
	@mkdir -p $(dir $@)
	cp $< $@

$(OUT)/include/%.h: agent/maps/%.h
	@mkdir -p $(dir $@)
	cp $< $@

# Rewritten only when the value changes, so objects rebuild only then.
build/gen/bpfshim_config.h: FORCE
	@mkdir -p build/gen
	@echo '#define BPFSHIM_DEFAULT_PYTHON "$(PYTHON)"' > $@.tmp
	@cmp -s $@.tmp $@ && rm $@.tmp || mv $@.tmp $@

build/libbpf_shim/conn.o: build/gen/bpfshim_config.h

build/%.o: %.c $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

build/core/%.o: %.c $(HDRS) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DBPFSHIM_CORE_ONLY -c $< -o $@

$(OUT)/libbpfshim.so: $(AGENT_OBJ) $(SHIM_OBJ) build/libbpf_shim/start/preload.o
	@mkdir -p $(OUT)
	$(CC) -shared -o $@ $^ $(LDLIBS) -Wl,-z,nodelete -Wl,-z,defs

$(OUT)/libbpfshim_core.so: $(patsubst %.c,build/core/%.o,$(CORE_SRC)) build/core/agent/start/core.o
	@mkdir -p $(OUT)
	$(CC) -shared -o $@ $^ $(LDLIBS) -Wl,-z,defs

# No TLS, no libbpfshim code: see agent/boot/boot.c.
$(OUT)/libbpfshim_boot.so: agent/boot/boot.c Makefile
	@mkdir -p $(OUT)
	$(CC) -O2 -g -fPIC -shared -Wall -Wextra -o $@ $< -ldl

clean:
	rm -rf build $(OUT)/*.so $(OUT)/include

.PHONY: all clean FORCE

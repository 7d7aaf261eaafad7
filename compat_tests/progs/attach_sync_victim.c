/* The victim of test_attach_sync.py: calls probed() (or makes getppid(),
 * traced by syscalls:sys_enter_getppid) in a tight loop and stores the
 * number of calls made after each one in the shared page at fd 3, so the
 * loader knows how many calls came before and after its attach returned. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/syscall.h>

volatile long sink;

__attribute__((noinline)) void probed(long x)
{
	sink += x;
	sink ^= x >> 1;
}

int main(int argc, char **argv)
{
	uint64_t *calls = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, 3, 0);
	int sys = argc > 1 && !strcmp(argv[1], "syscall");

	if (calls == MAP_FAILED)
		return 1;
	for (uint64_t n = 1;; n++) {
		if (sys)
			syscall(SYS_getppid);
		else
			probed((long)n);
		__atomic_store_n(calls, n, __ATOMIC_RELEASE);
	}
}

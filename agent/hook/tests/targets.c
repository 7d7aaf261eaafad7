/* C probe targets; built twice (see Makefile): -O0, and -O2 -fcf-protection
 * (endbr64 prologues). SFX names the variant. */
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define N(x) CAT(x, SFX)

volatile long N(body_calls);

__attribute__((noinline)) long N(sum6)(long a, long b, long c, long d, long e, long f)
{
	N(body_calls)++;
	return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}

__attribute__((noinline)) long N(fib)(long n)
{
	return n < 2 ? n : N(fib)(n - 1) + N(fib)(n - 2);
}

__attribute__((noinline)) double N(fmadd)(double a, double b, double c)
{
	return a * b + c;
}

__attribute__((noinline)) long N(twice)(long x)
{
	N(body_calls)++;
	return x * 2;
}

__attribute__((noinline)) long N(lj_target)(long n, void (*leaf)(void))
{
	if (n == 0) {
		leaf();
		return 0;
	}
	return N(lj_target)(n - 1, leaf) + 1;
}

__attribute__((noinline)) long N(twice2)(long x)
{
	N(body_calls)++;
	return x * 2;
}

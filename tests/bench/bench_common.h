/* bench_common.h: what several benchmarks need: clocks and the machine's
 * measured FMA peak. Header-only (static functions), since every
 * tests/bench/bench_*.c is a program of its own. */
#ifndef RC_BENCH_COMMON_H
#define RC_BENCH_COMMON_H

#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* CPU time of the whole process (all threads). */
static inline double bench_cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* 16 independent FMA chains: more than latency x ports on current cores, so
 * the loop runs at the FMA units' throughput. Returns a value that depends
 * on every chain. */
__attribute__((target("avx512f,fma"))) static inline float bench_fma_chains_512(long iters)
{
    __m512 acc[16];
    const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-6f);
    for (int i = 0; i < 16; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
    for (int i = 1; i < 16; i++)
        acc[0] = _mm512_add_ps(acc[0], acc[i]);
    return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2,fma"))) static inline float bench_fma_chains_256(long iters)
{
    __m256 acc[16];
    const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-6f);
    for (int i = 0; i < 16; i++)
        acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
    float out[8];
    for (int i = 1; i < 16; i++)
        acc[0] = _mm256_add_ps(acc[0], acc[i]);
    _mm256_storeu_ps(out, acc[0]);
    return out[0];
}

/* FMA peak in GFLOP/s on `threads` threads (each running the chains, AVX-512
 * or AVX2): the fastest of runs of `iters` iterations (about a millisecond),
 * repeated until `patience` runs in a row bring nothing faster, at most
 * max_runs (a shared machine leaves a few runs undisturbed). */
static inline double bench_fma_peak(int threads, int avx512, long iters, int patience, int max_runs)
{
    double best = 0;
    for (int run = 0, stale = 0; run < max_runs && stale < patience; run++, stale++) {
        float total = 0;
        const double t0 = bench_now();
#pragma omp parallel num_threads(threads) reduction(+ : total)
        total += avx512 ? bench_fma_chains_512(iters) : bench_fma_chains_256(iters);
        const double t = bench_now() - t0;
        if (total == 42.0f) /* keeps the chains' results alive */
            printf(" ");
        const double gflops = (double)threads * iters * 16 * (avx512 ? 16 : 8) * 2 / t / 1e9;
        if (gflops > best * 1.001)
            stale = 0;
        best = gflops > best ? gflops : best;
    }
    return best;
}

#endif

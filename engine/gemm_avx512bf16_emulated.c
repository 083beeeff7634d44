/* gemm_avx512bf16_emulated.c: the "avx512bf16-emulated" backend: the same
 * dot-product kernel (gemm_avx512bf16_body.h) with VDPBF16PS emulated by two
 * FMAs, for testing it on CPUs that lack the instruction (AVX-512F is
 * enough). Slower than the avx512 backend: never chosen by "auto". */
#define GEMM_DOT_EMULATED 1
#define GEMM_DOT_UKERNEL gemm_ukernel_avx512bf16_emulated
#define GEMM_DOT_NAME "avx512bf16-emulated"
#include "gemm_avx512bf16_body.h"

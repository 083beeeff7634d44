/* gemm_avx512bf16.c: the "avx512bf16" backend's dot-product kernel, with
 * VDPBF16PS (gemm_avx512bf16_body.h). Called only when CPUID reports
 * AVX512_BF16. */
#define GEMM_DOT_EMULATED 0
#define GEMM_DOT_UKERNEL gemm_ukernel_avx512bf16
#define GEMM_DOT_NAME "avx512bf16"
#include "gemm_avx512bf16_body.h"

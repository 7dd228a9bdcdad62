/* Scaled dot-product attention for BERT-family encoders in bfloat16, head size 32 or 64, its
 * two matrix products on AMX tiles or with AVX512-BF16 dot products (atoma_lab/inference/
 * native_attention.py says where each runs and how the engine uses it).
 *
 * Reads queries, keys and values straight from the fused Q/K/V GEMM's output rows
 * (row b*L + i: [q heads | k heads | v heads], each head `d` contiguous bfloat16) and writes
 * each head's context into the output rows (row b*L + i: [heads], `d` each). Keys at and past
 * a sequence's length are masked; query rows past it get zeros. Scores and softmax in float32,
 * probabilities rounded to bfloat16 for the P.V product (as torch's CPU flash attention does),
 * the division by the softmax sum after it.
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

int atoma_amx_permit(void) {
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 0 : -1;
}

static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

typedef struct {
    const uint16_t *qkv;
    int64_t qkv_stride;
    uint16_t *out;
    int64_t out_stride;
    const int64_t *lengths;
    int64_t batch, length, heads, head_dim;
    float scale;
    int amx; /* 1: AMX tiles; 0: AVX512-BF16 dot products */
} job;

/* The two matrix products of a block of 16 query rows, on AMX tiles or with AVX512-BF16 dot
   products, over the same packed operands:
   kv: per 16 keys and 32-wide slice of the head, [16 pairs of d][16 keys] 32-bit words;
   vv: per 32 keys and 16 columns of the head, [16 key pairs][16 d] 32-bit words. */

/* S[16][nk] = Q K^T: tile 4 accumulates, the queries' slices in tiles 5 and 7, keys in 6 */
static void scores_amx(const uint16_t *qb, const uint32_t *kv, float *S, int64_t D, int64_t nk) {
    const int64_t chunks = D / 32;
    _tile_loadd(5, qb, D * 2);
    if (chunks == 2) _tile_loadd(7, qb + 32, D * 2);
    for (int64_t j0 = 0; j0 < nk; j0 += 16) {
        _tile_zero(4);
        _tile_loadd(6, kv + (j0 / 16) * chunks * 256, 64);
        _tile_dpbf16ps(4, 5, 6);
        if (chunks == 2) {
            _tile_loadd(6, kv + ((j0 / 16) * 2 + 1) * 256, 64);
            _tile_dpbf16ps(4, 7, 6);
        }
        _tile_stored(4, S + j0, nk * 4);
    }
}

/* C[16][D] = P V: tiles 0-1 (and 2-3 for D = 64) accumulate, P in tile 5, V in tiles 6/7 */
static void context_amx(const uint16_t *P, const uint32_t *vv, float *C, int64_t D, int64_t nk) {
    const int64_t chunks = D / 32;
    _tile_zero(0);
    _tile_zero(1);
    if (chunks == 2) {
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int64_t k0 = 0; k0 < nk; k0 += 32) {
        const uint32_t *vb = vv + (k0 / 32) * (D / 16) * 256;
        _tile_loadd(5, P + k0, nk * 2);
        _tile_loadd(6, vb, 64);
        _tile_loadd(7, vb + 256, 64);
        _tile_dpbf16ps(0, 5, 6);
        _tile_dpbf16ps(1, 5, 7);
        if (chunks == 2) {
            _tile_loadd(6, vb + 512, 64);
            _tile_loadd(7, vb + 768, 64);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, C, D * 4);
    _tile_stored(1, C + 16, D * 4);
    if (chunks == 2) {
        _tile_stored(2, C + 32, D * 4);
        _tile_stored(3, C + 48, D * 4);
    }
}

#define BCAST(w) ((__m512bh)_mm512_set1_epi32((int)(w)))
#define LOADBH(p) ((__m512bh)_mm512_loadu_si512(p))

/* The same products with VDPBF16PS: a lane per key (scores) or per column (context), a pair
   of bfloat16 a step, four query rows at a time sharing each load of keys or values. */
static void scores_avx512(const uint16_t *qb, const uint32_t *kv, float *S, int64_t D,
                          int64_t nk, int64_t valid) {
    const int64_t pairs = D / 2;
    for (int64_t r = 0; r < valid; r += 4) {
        const uint32_t *q0 = (const uint32_t *)(qb + r * D), *q1 = q0 + pairs,
                       *q2 = q1 + pairs, *q3 = q2 + pairs; /* rows past 16 never read: r<=12 */
        for (int64_t j0 = 0; j0 < nk; j0 += 16) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            const uint32_t *kb = kv + (j0 / 16) * (D / 32) * 256;
            for (int64_t t = 0; t < pairs; ++t) {
                /* pair t of the head: slice t / 16, row t % 16 of that slice's tile */
                __m512bh k = LOADBH(kb + (t / 16) * 256 + (t % 16) * 16);
                a0 = _mm512_dpbf16_ps(a0, BCAST(q0[t]), k);
                a1 = _mm512_dpbf16_ps(a1, BCAST(q1[t]), k);
                a2 = _mm512_dpbf16_ps(a2, BCAST(q2[t]), k);
                a3 = _mm512_dpbf16_ps(a3, BCAST(q3[t]), k);
            }
            _mm512_storeu_ps(S + r * nk + j0, a0);
            _mm512_storeu_ps(S + (r + 1) * nk + j0, a1);
            _mm512_storeu_ps(S + (r + 2) * nk + j0, a2);
            _mm512_storeu_ps(S + (r + 3) * nk + j0, a3);
        }
    }
}

static void context_avx512(const uint16_t *P, const uint32_t *vv, float *C, int64_t D,
                           int64_t nk, int64_t valid) {
    for (int64_t r = 0; r < valid; r += 4) {
        const uint32_t *p0 = (const uint32_t *)(P + r * nk), *p1 = p0 + nk / 2,
                       *p2 = p1 + nk / 2, *p3 = p2 + nk / 2;
        for (int64_t dc = 0; dc < D / 16; ++dc) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k0 = 0; k0 < nk; k0 += 32) {
                const uint32_t *vb = vv + ((k0 / 32) * (D / 16) + dc) * 256;
                for (int64_t t = 0; t < 16; ++t) {
                    __m512bh v = LOADBH(vb + t * 16);
                    int64_t pair = k0 / 2 + t;
                    a0 = _mm512_dpbf16_ps(a0, BCAST(p0[pair]), v);
                    a1 = _mm512_dpbf16_ps(a1, BCAST(p1[pair]), v);
                    a2 = _mm512_dpbf16_ps(a2, BCAST(p2[pair]), v);
                    a3 = _mm512_dpbf16_ps(a3, BCAST(p3[pair]), v);
                }
            }
            _mm512_storeu_ps(C + r * D + dc * 16, a0);
            _mm512_storeu_ps(C + (r + 1) * D + dc * 16, a1);
            _mm512_storeu_ps(C + (r + 2) * D + dc * 16, a2);
            _mm512_storeu_ps(C + (r + 3) * D + dc * 16, a3);
        }
    }
}

static void one_head(const job *jb, int64_t b, int64_t h, float *S, uint16_t *P,
                     uint32_t *kv, uint32_t *vv, uint16_t *qb, float *C) {
    const int64_t L = jb->length, H = jb->heads, D = jb->head_dim;
    const int64_t chunks = D / 32; /* 32-wide slices of a head: 1 or 2 */
    int64_t n = jb->lengths[b];
    if (n > L) n = L;
    if (n < 0) n = 0;
    const int64_t nk = (n + 31) & ~(int64_t)31; /* keys, padded to 32 */
    const uint16_t *base = jb->qkv + b * L * jb->qkv_stride;
    const int64_t koff = H * D + h * D, voff = 2 * H * D + h * D, qoff = h * D;

    /* K^T in the tile layout: per block of 16 keys and 32-wide slice c of the head, one tile
       [16 pairs of d][16 keys] of 32-bit words */
    for (int64_t j0 = 0; j0 < nk; j0 += 16) {
        for (int64_t c = 0; c < chunks; ++c) {
            uint32_t *blk = kv + ((j0 / 16) * chunks + c) * 256;
            for (int64_t jj = 0; jj < 16; ++jj) {
                int64_t j = j0 + jj;
                if (j < n) {
                    const uint32_t *krow =
                        (const uint32_t *)(base + j * jb->qkv_stride + koff + c * 32);
                    for (int t = 0; t < 16; ++t) blk[t * 16 + jj] = krow[t];
                } else {
                    for (int t = 0; t < 16; ++t) blk[t * 16 + jj] = 0;
                }
            }
        }
    }
    /* V in the tile layout: per block of 32 keys, D/16 tiles (d 0-15, 16-31, ...) of
       [16 key pairs][16 d] 32-bit words holding (V[2t][d], V[2t+1][d]) */
    for (int64_t k0 = 0; k0 < nk; k0 += 32) {
        uint32_t *blk = vv + (k0 / 32) * (D / 16) * 256;
        for (int64_t c = 0; c < chunks; ++c) {
            for (int t = 0; t < 16; ++t) {
                int64_t k = k0 + 2 * t;
                __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
                if (k < n) lo = _mm512_loadu_si512(base + k * jb->qkv_stride + voff + c * 32);
                if (k + 1 < n)
                    hi = _mm512_loadu_si512(base + (k + 1) * jb->qkv_stride + voff + c * 32);
                /* per 128-bit lane, pairs (lo[d], hi[d]): a = [d0-3, d8-11, d16-19, d24-27],
                   e = [d4-7, d12-15, d20-23, d28-31] */
                __m512i a = _mm512_unpacklo_epi16(lo, hi);
                __m512i e = _mm512_unpackhi_epi16(lo, hi);
                __m512i first = _mm512_permutex2var_epi64(
                    a, _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), e);  /* d0-15 */
                __m512i second = _mm512_permutex2var_epi64(
                    a, _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4), e); /* d16-31 */
                _mm512_storeu_si512(blk + (2 * c) * 256 + t * 16, first);
                _mm512_storeu_si512(blk + (2 * c + 1) * 256 + t * 16, second);
            }
        }
    }

    const __mmask16 all = 0xFFFF;
    for (int64_t i0 = 0; i0 < L; i0 += 16) {
        int64_t rows = L - i0 < 16 ? L - i0 : 16;
        int64_t valid = n - i0;
        if (valid < 0) valid = 0;
        if (valid > rows) valid = rows;
        if (valid == 0) {
            for (int64_t r = 0; r < rows; ++r)
                memset(jb->out + (b * L + i0 + r) * jb->out_stride + h * D, 0, D * 2);
            continue;
        }
        for (int64_t r = 0; r < 16; ++r) {
            if (r < valid)
                memcpy(qb + r * D, base + (i0 + r) * jb->qkv_stride + qoff, D * 2);
            else
                memset(qb + r * D, 0, D * 2);
        }
        if (jb->amx)
            scores_amx(qb, kv, S, D, nk);
        else
            scores_avx512(qb, kv, S, D, nk, valid);
        float sums[16];
        for (int64_t r = 0; r < 16; ++r) {
            float *srow = S + r * nk;
            uint16_t *prow = P + r * nk;
            if (r >= valid) {
                memset(prow, 0, nk * 2);
                sums[r] = 1.0f;
                continue;
            }
            __m512 m = _mm512_set1_ps(-3.0e38f);
            for (int64_t j = 0; j < n; j += 16) {
                __mmask16 k = n - j >= 16 ? all : (__mmask16)((1u << (n - j)) - 1);
                m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, srow + j));
            }
            float mx = _mm512_reduce_max_ps(m);
            __m512 vmx = _mm512_set1_ps(mx), vsc = _mm512_set1_ps(jb->scale);
            __m512 acc = _mm512_setzero_ps();
            for (int64_t j = 0; j < nk; j += 16) {
                __mmask16 k = j >= n ? 0 : n - j >= 16 ? all : (__mmask16)((1u << (n - j)) - 1);
                __m512 s = _mm512_maskz_loadu_ps(k, srow + j);
                __m512 p = _mm512_maskz_mov_ps(k, exp_ps(_mm512_mul_ps(_mm512_sub_ps(s, vmx), vsc)));
                __m256bh pb = _mm512_cvtneps_pbh(p);
                /* the sum over the rounded values the P.V product uses */
                acc = _mm512_add_ps(acc, _mm512_cvtpbh_ps(pb));
                _mm256_storeu_si256((__m256i *)(prow + j), (__m256i)pb);
            }
            sums[r] = _mm512_reduce_add_ps(acc);
        }
        if (jb->amx)
            context_amx(P, vv, C, D, nk);
        else
            context_avx512(P, vv, C, D, nk, valid);
        for (int64_t r = 0; r < rows; ++r) {
            uint16_t *orow = jb->out + (b * L + i0 + r) * jb->out_stride + h * D;
            if (r >= valid) {
                memset(orow, 0, D * 2);
                continue;
            }
            __m512 inv = _mm512_set1_ps(1.0f / sums[r]);
            for (int64_t c = 0; c < D; c += 16) {
                __m256bh o = _mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(C + r * D + c), inv));
                _mm256_storeu_si256((__m256i *)(orow + c), (__m256i)o);
            }
        }
    }
}

/* One thread's share: heads thread, thread + threads, ... of the batch's batch x heads. */
static int run_share(const job *jb, int thread, int threads) {
    const int64_t nk = (jb->length + 31) & ~(int64_t)31, D = jb->head_dim;
    float *S = aligned_alloc(64, 16 * nk * 4);
    uint16_t *P = aligned_alloc(64, 16 * nk * 2);
    uint32_t *kv = aligned_alloc(64, nk * D * 2);
    uint32_t *vv = aligned_alloc(64, nk * D * 2);
    uint16_t *qb = aligned_alloc(64, 16 * D * 2);
    float *C = aligned_alloc(64, 16 * D * 4);
    int status = 0;
    if (!S || !P || !kv || !vv || !qb || !C) {
        status = -2;
    } else {
        if (jb->amx) {
            tile_config cfg;
            memset(&cfg, 0, sizeof cfg);
            cfg.palette_id = 1;
            for (int t = 0; t < 8; ++t) {
                cfg.rows[t] = 16;
                cfg.colsb[t] = 64;
            }
            _tile_loadconfig(&cfg);
        }
        const int64_t items = jb->batch * jb->heads;
        for (int64_t w = thread; w < items; w += threads)
            one_head(jb, w / jb->heads, w % jb->heads, S, P, kv, vv, qb, C);
        if (jb->amx) _tile_release();
    }
    free(S); free(P); free(kv); free(vv); free(qb); free(C);
    return status;
}

/* Returns 0, or -1 (bad arguments), -2 (out of memory). `amx`: 1 for AMX tiles (the caller
   has checked the CPU and asked for tile data with atoma_amx_permit), 0 for AVX512-BF16 dot
   products (AVX-512F and AVX512-BF16 needed). The heads are shared among `threads`
   OpenMP threads: in a process that has loaded torch, torch's own OpenMP runtime and thread
   pool (the same soname), so the kernel's threads are the ones torch's GEMMs just ran on,
   not extra threads competing with them for the cores. */
int atoma_attention_bf16(const uint16_t *qkv, int64_t qkv_stride, uint16_t *out,
                         int64_t out_stride, const int64_t *lengths, int64_t batch,
                         int64_t length, int64_t heads, int64_t head_dim, float scale,
                         int threads, int amx) {
    if ((head_dim != 32 && head_dim != 64) || batch < 1 || length < 1 || heads < 1
        || threads < 1 || qkv_stride < 3 * heads * head_dim || out_stride < heads * head_dim)
        return -1;
    if (threads > batch * heads) threads = (int)(batch * heads);
    job jb = {qkv, qkv_stride, out, out_stride, lengths, batch, length, heads, head_dim, scale,
              amx != 0};
    int status = 0;
#pragma omp parallel num_threads(threads) reduction(min : status)
    {
        int got = omp_get_num_threads();
        status = run_share(&jb, omp_get_thread_num(), got);
    }
    return status;
}

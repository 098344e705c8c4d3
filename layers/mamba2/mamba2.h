/* mamba2 — the Mamba-2 (SSD) mixer (layers/mamba2/mamba2.c), as a registered block. Its chunked
 * SSD kernels have their own header, layers/mamba2/ssd.h. */
#ifndef HY_LAYERS_MAMBA2_H
#define HY_LAYERS_MAMBA2_H
#include "layers/registry.h"

extern const hy_block_ops hy_block_mamba2;

/* Steps per chunk of the block's SSD (forward and backward): an implementation choice, not a
 * model option (measured: docs/blocks.md, "mamba2"). */
#define HY_MAMBA2_CHUNK 64

#endif

/* mamba — the Mamba-1 selective SSM mixer (layers/mamba/mamba.c), as a registered block. Its
 * selective-scan kernels have their own header, layers/mamba/scan.h. */
#ifndef HY_LAYERS_MAMBA_H
#define HY_LAYERS_MAMBA_H
#include "layers/registry.h"

extern const hy_block_ops hy_block_mamba;

#define HY_MAMBA_CHUNK 64      /* the block's backward chunk (steps between stored scan states) */

#endif

/* Processes that work together (MPI, behind this one small layer: nothing else includes mpi.h).
 * A hy_dist is a group of processes (an MPI communicator); NULL stands for this process alone, and
 * every function below then does what one process would (a collective over one process is a
 * copy or nothing). MPI is started only when the program was launched by mpirun or srun
 * (hy_dist_init), so a plain `hybrid-exp CONFIG.yaml` never touches it.
 *
 * Errors: a wrong argument is a negative return with hy_last_error(); a failure inside MPI stops
 * every process of the job (MPI's default error handler), so no rank waits forever on another. */
#ifndef HY_CORE_DIST_H
#define HY_CORE_DIST_H
#include <stdbool.h>
#include <stddef.h>

typedef struct hy_dist hy_dist;

typedef enum { HY_DIST_F32, HY_DIST_F64, HY_DIST_I64 } hy_dist_type;
typedef enum { HY_DIST_SUM, HY_DIST_MAX, HY_DIST_MIN } hy_dist_op;

/* Whether a launcher started this process as one rank of a job (Open MPI's mpirun, or a PMI/PMIx
 * launcher such as srun): its environment says so. */
bool hy_dist_launched(void);
/* Starts MPI when hy_dist_launched(), with *world = every process of the job; otherwise *world =
 * NULL and MPI stays untouched. Call once, from the main thread, before any other thread. */
int hy_dist_init(int *argc, char ***argv, hy_dist **world);
/* The world of hy_dist_init (NULL before it, or without a launcher). */
hy_dist *hy_dist_world(void);
/* Frees world and shuts MPI down (nothing for NULL). */
void hy_dist_finalize(hy_dist *world);

int hy_dist_rank(const hy_dist *d);   /* 0 for NULL */
int hy_dist_size(const hy_dist *d);   /* 1 for NULL */
/* Splits d into groups by `color` (ranks keep their order inside a group): *out is this rank's
 * group. Collective over d. For NULL, *out = NULL. */
int hy_dist_split(hy_dist *d, int color, hy_dist **out);
void hy_dist_free(hy_dist *d);   /* a group from hy_dist_split */

/* Waits until every rank of d got here, sleeping between polls (an idle rank leaves its core to
 * the ranks still working instead of spinning on it). */
int hy_dist_barrier(hy_dist *d);
/* bytes of buf from `root` to every rank (waiting ranks sleep between polls, as in the barrier). */
int hy_dist_bcast(hy_dist *d, void *buf, size_t bytes, int root);
/* n values of buf combined over d by op, in place, the same result on every rank. */
int hy_dist_allreduce(hy_dist *d, void *buf, size_t n, hy_dist_type t, hy_dist_op op);

/* Partitions of a float array: rank r owns [off[r], off[r+1]) (off has size+1 entries). */
/* Every rank's part of buf to every rank, in place. */
int hy_dist_allgatherv_f32(hy_dist *d, float *buf, const size_t *off);
/* Every rank's part (own: its off[r+1]-off[r] floats) into root's full (root only; may be NULL elsewhere). */
int hy_dist_gatherv_f32(hy_dist *d, const float *own, float *full, const size_t *off, int root);
/* root's full, rank r's part into r's own. */
int hy_dist_scatterv_f32(hy_dist *d, const float *full, float *own, const size_t *off, int root);

/* ---- nonblocking collectives: started now, completed by hy_dist_wait ---- */
typedef struct hy_dist_pending hy_dist_pending;
int hy_dist_pending_new(hy_dist_pending **p);
void hy_dist_pending_free(hy_dist_pending *p);
/* Starts buf := sum over d of buf (n floats, in place); buf must stay untouched until the wait. */
int hy_dist_iallreduce_sum_f32(hy_dist *d, float *buf, size_t n, hy_dist_pending *p);
/* Starts the reduce-scatter of send (sum over ranks of counts[0] + ... + counts[size-1] floats):
 * rank r receives the sum of the r-th block, counts[r] floats, into recv. */
int hy_dist_ireduce_scatter_sum_f32(hy_dist *d, const float *send, float *recv, const size_t *counts,
                                    hy_dist_pending *p);
/* Lets MPI move the started operations on (it progresses them only inside its own calls). */
void hy_dist_progress(hy_dist_pending *p);
/* Waits for every started operation of p; p is empty again after. */
int hy_dist_wait(hy_dist_pending *p);

/* ---- a work queue: items 0..n-1 handed out in order, one at a time, to whoever asks next ---- */
typedef struct hy_dist_queue hy_dist_queue;
/* Collective over d. Rank 0 keeps the counter; `asks` says whether this rank will ask for items
 * (rank 0 always does). */
int hy_dist_queue_open(hy_dist *d, int n_items, bool asks, hy_dist_queue **q);
/* The next item, or -1 when none is left (then ask no more). */
int hy_dist_queue_next(hy_dist_queue *q, int *item);
/* An asking rank that stops before it got -1 (interrupted) tells rank 0 it asks no more. */
void hy_dist_queue_quit(hy_dist_queue *q);
/* Rank 0: answers the requests waiting now (call it often while busy; cheap when none wait). */
void hy_dist_queue_serve(hy_dist_queue *q);
/* Collective: rank 0 hands out no more items and answers until every asking rank has been told
 * that none is left (or quit); frees q. */
int hy_dist_queue_close(hy_dist_queue *q);

/* Stops every process of the job with exit status `code` (MPI_Abort); for NULL, nothing (the
 * caller returns the code itself). Print the reason first. */
void hy_dist_abort(hy_dist *d, int code);
/* "Open MPI 4.1.4" or similar; "none" when MPI is not running. */
const char *hy_dist_library(void);

#endif

/* The MPI layer (core/dist.h): the one file that includes mpi.h. Every call is made from the main
 * thread outside OpenMP regions (MPI_THREAD_FUNNELED). */
#include "core/dist.h"
#include "core/error.h"
#include "core/mem.h"
#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct hy_dist {
    MPI_Comm comm;
    int rank, size;
};

struct hy_dist_pending {
    MPI_Request *req;
    int n, cap;
    int **counts;   /* count arrays of started reduce-scatters: MPI reads them until completion */
    int n_counts, cap_counts;
};

struct hy_dist_queue {
    hy_dist *d;
    MPI_Comm comm;       /* a private copy of d's, so queue messages meet no other traffic */
    int n_items, next;   /* rank 0: the counter */
    int askers, told;    /* rank 0: ranks other than 0 that ask, and those told that none is left */
    bool finished;       /* an asking rank: got -1 or quit */
};

enum { QUEUE_ASK = 17, QUEUE_ANSWER = 18 };
enum { ASK_NEXT = 0, ASK_QUIT = 1 };

bool hy_dist_launched(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return true;
    return false;
}

/* A hy_dist over comm (owned). */
static int wrap(MPI_Comm comm, hy_dist **out) {
    hy_dist *d = calloc(1, sizeof *d);
    if (!d) return hy_fail_code(HY_ERR_NOMEM, "out of memory for a process group");
    d->comm = comm;
    MPI_Comm_rank(comm, &d->rank);
    MPI_Comm_size(comm, &d->size);
    *out = d;
    return 0;
}

static hy_dist *the_world;

hy_dist *hy_dist_world(void) { return the_world; }

int hy_dist_init(int *argc, char ***argv, hy_dist **world) {
    *world = NULL;
    if (!hy_dist_launched()) return 0;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return hy_fail("MPI_Init_thread failed");
    if (provided < MPI_THREAD_FUNNELED) {
        MPI_Finalize();
        return hy_fail("the MPI library does not support MPI_THREAD_FUNNELED (OpenMP threads inside a rank)");
    }
    MPI_Comm comm;
    MPI_Comm_dup(MPI_COMM_WORLD, &comm);
    int rc = wrap(comm, world);
    the_world = *world;
    return rc;
}

void hy_dist_finalize(hy_dist *world) {
    if (!world) return;
    if (world == the_world) the_world = NULL;
    hy_dist_free(world);
    MPI_Finalize();
}

int hy_dist_rank(const hy_dist *d) { return d ? d->rank : 0; }
int hy_dist_size(const hy_dist *d) { return d ? d->size : 1; }

int hy_dist_split(hy_dist *d, int color, hy_dist **out) {
    *out = NULL;
    if (!d) return 0;
    MPI_Comm comm;
    MPI_Comm_split(d->comm, color, d->rank, &comm);
    return wrap(comm, out);
}

void hy_dist_free(hy_dist *d) {
    if (!d) return;
    MPI_Comm_free(&d->comm);
    free(d);
}

/* Polls r to completion, sleeping 0.1 ms between polls: an idle rank leaves the core it shares. */
static void wait_politely(MPI_Request *r) {
    int done = 0;
    struct timespec pause = {0, 100000};
    for (MPI_Test(r, &done, MPI_STATUS_IGNORE); !done; MPI_Test(r, &done, MPI_STATUS_IGNORE)) nanosleep(&pause, NULL);
}

int hy_dist_barrier(hy_dist *d) {
    if (!d) return 0;
    MPI_Request r;
    MPI_Ibarrier(d->comm, &r);
    wait_politely(&r);
    return 0;
}

int hy_dist_bcast(hy_dist *d, void *buf, size_t bytes, int root) {
    if (!d) return 0;
    for (size_t off = 0; off < bytes;) {   /* MPI counts are ints */
        int n = bytes - off > INT_MAX ? INT_MAX : (int)(bytes - off);
        MPI_Request r;
        MPI_Ibcast((char *)buf + off, n, MPI_BYTE, root, d->comm, &r);
        wait_politely(&r);
        off += (size_t)n;
    }
    return 0;
}

static MPI_Datatype mpi_type(hy_dist_type t) {
    return t == HY_DIST_F32 ? MPI_FLOAT : t == HY_DIST_F64 ? MPI_DOUBLE : MPI_INT64_T;
}
static size_t type_size(hy_dist_type t) { return t == HY_DIST_F32 ? 4 : 8; }
static MPI_Op mpi_op(hy_dist_op op) { return op == HY_DIST_SUM ? MPI_SUM : op == HY_DIST_MAX ? MPI_MAX : MPI_MIN; }

int hy_dist_allreduce(hy_dist *d, void *buf, size_t n, hy_dist_type t, hy_dist_op op) {
    if (!d) return 0;
    for (size_t off = 0; off < n;) {
        int k = n - off > INT_MAX ? INT_MAX : (int)(n - off);
        MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * type_size(t), k, mpi_type(t), mpi_op(op), d->comm);
        off += (size_t)k;
    }
    return 0;
}

/* The counts and displacements of partition `off` as MPI ints (malloc'd, 2 x size), or an error
 * when a part lies beyond what an int counts. */
static int int_parts(const hy_dist *d, const size_t *off, int **counts, int **displs) {
    if (off[d->size] > (size_t)INT_MAX)
        return hy_fail("%zu floats: more than MPI's int counts address in one collective", off[d->size]);
    int *c = malloc(sizeof(int) * 2 * (size_t)d->size);
    if (!c) return hy_fail_code(HY_ERR_NOMEM, "out of memory");
    for (int r = 0; r < d->size; r++) c[r] = (int)(off[r + 1] - off[r]), c[d->size + r] = (int)off[r];
    *counts = c, *displs = c + d->size;
    return 0;
}

int hy_dist_allgatherv_f32(hy_dist *d, float *buf, const size_t *off) {
    if (!d) return 0;
    int *c, *ds, rc = int_parts(d, off, &c, &ds);
    if (rc < 0) return rc;
    MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, c, ds, MPI_FLOAT, d->comm);
    free(c);
    return 0;
}

int hy_dist_gatherv_f32(hy_dist *d, const float *own, float *full, const size_t *off, int root) {
    if (!d) {
        memmove(full, own, sizeof(float) * (off[1] - off[0]));
        return 0;
    }
    int *c, *ds, rc = int_parts(d, off, &c, &ds);
    if (rc < 0) return rc;
    MPI_Gatherv(own, c[d->rank], MPI_FLOAT, full, c, ds, MPI_FLOAT, root, d->comm);
    free(c);
    return 0;
}

int hy_dist_scatterv_f32(hy_dist *d, const float *full, float *own, const size_t *off, int root) {
    if (!d) {
        memmove(own, full, sizeof(float) * (off[1] - off[0]));
        return 0;
    }
    int *c, *ds, rc = int_parts(d, off, &c, &ds);
    if (rc < 0) return rc;
    MPI_Scatterv(full, c, ds, MPI_FLOAT, own, c[d->rank], MPI_FLOAT, root, d->comm);
    free(c);
    return 0;
}

int hy_dist_pending_new(hy_dist_pending **p) {
    *p = calloc(1, sizeof **p);
    return *p ? 0 : hy_fail_code(HY_ERR_NOMEM, "out of memory");
}

/* Frees the count arrays kept for started operations. */
static void drop_counts(hy_dist_pending *p) {
    for (int i = 0; i < p->n_counts; i++) free(p->counts[i]);
    p->n_counts = 0;
}

void hy_dist_pending_free(hy_dist_pending *p) {
    if (!p) return;
    drop_counts(p);
    free(p->counts);
    free(p->req);
    free(p);
}

/* Keeps c (malloc'd) until the next wait; false when out of memory. */
static bool keep_counts(hy_dist_pending *p, int *c) {
    if (p->n_counts == p->cap_counts) {
        int cap = p->cap_counts ? 2 * p->cap_counts : 16;
        int **k = realloc(p->counts, sizeof *k * (size_t)cap);
        if (!k) return false;
        p->counts = k, p->cap_counts = cap;
    }
    p->counts[p->n_counts++] = c;
    return true;
}

/* A free request slot of p (grown as needed), or NULL. */
static MPI_Request *next_request(hy_dist_pending *p) {
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 16;
        MPI_Request *r = realloc(p->req, sizeof *r * (size_t)cap);
        if (!r) return NULL;
        p->req = r, p->cap = cap;
    }
    return &p->req[p->n++];
}

int hy_dist_iallreduce_sum_f32(hy_dist *d, float *buf, size_t n, hy_dist_pending *p) {
    if (!d) return 0;
    for (size_t off = 0; off < n;) {
        int k = n - off > INT_MAX ? INT_MAX : (int)(n - off);
        MPI_Request *r = next_request(p);
        if (!r) return hy_fail_code(HY_ERR_NOMEM, "out of memory");
        MPI_Iallreduce(MPI_IN_PLACE, buf + off, k, MPI_FLOAT, MPI_SUM, d->comm, r);
        off += (size_t)k;
    }
    return 0;
}

int hy_dist_ireduce_scatter_sum_f32(hy_dist *d, const float *send, float *recv, const size_t *counts,
                                    hy_dist_pending *p) {
    if (!d) {
        memmove(recv, send, sizeof(float) * counts[0]);
        return 0;
    }
    size_t total = 0;
    for (int r = 0; r < d->size; r++) total += counts[r];
    if (total > (size_t)INT_MAX) return hy_fail("reduce-scatter of %zu floats: more than MPI's int counts", total);
    int *c = malloc(sizeof(int) * (size_t)d->size);
    if (!c || !keep_counts(p, c)) {
        free(c);
        return hy_fail_code(HY_ERR_NOMEM, "out of memory");
    }
    MPI_Request *r = next_request(p);
    if (!r) return hy_fail_code(HY_ERR_NOMEM, "out of memory");
    for (int k = 0; k < d->size; k++) c[k] = (int)counts[k];
    MPI_Ireduce_scatter(send, recv, c, MPI_FLOAT, MPI_SUM, d->comm, r);
    return 0;
}

void hy_dist_progress(hy_dist_pending *p) {
    int done;
    if (p && p->n) MPI_Testall(p->n, p->req, &done, MPI_STATUSES_IGNORE);
}

int hy_dist_wait(hy_dist_pending *p) {
    if (!p) return 0;
    if (p->n) MPI_Waitall(p->n, p->req, MPI_STATUSES_IGNORE);
    p->n = 0;
    drop_counts(p);
    return 0;
}

int hy_dist_queue_open(hy_dist *d, int n_items, bool asks, hy_dist_queue **q) {
    *q = calloc(1, sizeof **q);
    if (!*q) return hy_fail_code(HY_ERR_NOMEM, "out of memory");
    (*q)->d = d, (*q)->n_items = n_items;
    if (!d) return 0;
    MPI_Comm_dup(d->comm, &(*q)->comm);
    int64_t n = asks && d->rank != 0;
    hy_dist_allreduce(d, &n, 1, HY_DIST_I64, HY_DIST_SUM);
    (*q)->askers = (int)n;
    return 0;
}

/* Rank 0: the next item from the counter, -1 once none is left. */
static int take(hy_dist_queue *q) { return q->next < q->n_items ? q->next++ : -1; }

void hy_dist_queue_serve(hy_dist_queue *q) {
    if (!q || !q->d || q->d->rank != 0) return;
    for (;;) {
        int flag, ask, item;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, QUEUE_ASK, q->comm, &flag, &st);
        if (!flag) return;
        MPI_Recv(&ask, 1, MPI_INT, st.MPI_SOURCE, QUEUE_ASK, q->comm, MPI_STATUS_IGNORE);
        if (ask == ASK_QUIT) {
            q->told++;
            continue;
        }
        item = take(q);
        q->told += item < 0;
        MPI_Send(&item, 1, MPI_INT, st.MPI_SOURCE, QUEUE_ANSWER, q->comm);
    }
}

int hy_dist_queue_next(hy_dist_queue *q, int *item) {
    if (!q->d || q->d->rank == 0) {
        hy_dist_queue_serve(q);
        *item = take(q);
        return 0;
    }
    *item = -1;
    if (q->finished) return 0;
    int ask = ASK_NEXT;
    MPI_Request r;
    MPI_Send(&ask, 1, MPI_INT, 0, QUEUE_ASK, q->comm);
    MPI_Irecv(item, 1, MPI_INT, 0, QUEUE_ANSWER, q->comm, &r);
    wait_politely(&r);
    q->finished = *item < 0;
    return 0;
}

void hy_dist_queue_quit(hy_dist_queue *q) {
    if (!q || !q->d || q->d->rank == 0 || q->finished) return;
    int ask = ASK_QUIT;
    MPI_Send(&ask, 1, MPI_INT, 0, QUEUE_ASK, q->comm);
    q->finished = true;
}

int hy_dist_queue_close(hy_dist_queue *q) {
    if (!q) return 0;
    if (q->d) {
        struct timespec pause = {0, 200000};
        q->next = q->n_items;   /* whatever happens now, no run starts after this point */
        while (q->d->rank == 0 && q->told < q->askers) {
            hy_dist_queue_serve(q);
            if (q->told < q->askers) nanosleep(&pause, NULL);
        }
        hy_dist_barrier(q->d);
        MPI_Comm_free(&q->comm);
    }
    free(q);
    return 0;
}

void hy_dist_abort(hy_dist *d, int code) {
    if (d) MPI_Abort(MPI_COMM_WORLD, code);
}

const char *hy_dist_library(void) {
    static char name[MPI_MAX_LIBRARY_VERSION_STRING];
    int init = 0, len;
    MPI_Initialized(&init);
    if (!init) return "none";
    MPI_Get_library_version(name, &len);
    name[strcspn(name, ",\n")] = 0;   /* the first clause: "Open MPI v4.1.4" */
    return name;
}

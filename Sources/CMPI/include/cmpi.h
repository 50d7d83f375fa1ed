#ifndef CMPI_H
#define CMPI_H

// A few MPI calls reached through dlopen, so that neither the build nor a plain run needs MPI: only a
// process started by mpirun loads Open MPI's libmpi (ABI 40: Open MPI 3, 4 and 5). Every call is made
// from the thread that called cmpi_init (MPI_THREAD_FUNNELED). Functions return 0 on success or an MPI
// error code; errors are normally fatal anyway (Open MPI's default handler aborts the whole job).

#include <stddef.h>

/// Loads `library` (NULL: "libmpi.so.40") and initialises MPI. On failure returns non-zero and writes
/// a sentence into `error`.
int cmpi_init(const char *library, char *error, size_t capacity);
/// Whether cmpi_init succeeded and cmpi_finalize has not run.
int cmpi_active(void);
int cmpi_rank(void);
int cmpi_size(void);
/// Sums `count` floats (doubles) over all ranks, in place; counts beyond INT_MAX go in several calls.
int cmpi_allreduce_sum_float(float *values, size_t count);
int cmpi_allreduce_sum_double(double *values, size_t count);
/// Every rank's `bytes` bytes of `send`, in rank order, into `receive` (size × bytes).
int cmpi_allgather(const void *send, void *receive, size_t bytes);
/// Every rank's `length` into rank `root`'s `lengths` (size entries; MPI_Gather).
int cmpi_gather_lengths(const long long *length, long long *lengths, int root);
/// Every rank's `bytes` bytes of `send` into rank `root`'s `receive`, rank r's at `offsets[r]` with
/// `counts[r]` bytes (MPI_Gatherv; counts and offsets matter on the root only).
int cmpi_gatherv(const void *send, size_t bytes, void *receive, const int *counts, const int *offsets, int root);
/// `bytes` bytes of `buffer` from rank `root` to every rank.
int cmpi_broadcast(void *buffer, size_t bytes, int root);
int cmpi_barrier(void);
int cmpi_finalize(void);
/// Ends every rank of the job with `code`.
void cmpi_abort(int code);

/// Cores this process may run on (its CPU affinity, which mpirun's binding narrows); 0 when unknown.
int cmpi_usable_cores(void);

#endif

#define _GNU_SOURCE
#include "cmpi.h"

#include <dlfcn.h>
#include <sched.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

// Open MPI's handles are the addresses of its predefined objects (mpi.h: OMPI_PREDEFINED_GLOBAL), so
// dlsym of the object's name yields the handle itself; MPI_IN_PLACE is (void *)1.
typedef void *handle;
#define IN_PLACE ((void *)1)
#define THREAD_FUNNELED 1

static int (*p_init_thread)(int *, char ***, int, int *);
static int (*p_finalize)(void);
static int (*p_comm_rank)(handle, int *);
static int (*p_comm_size)(handle, int *);
static int (*p_allreduce)(const void *, void *, int, handle, handle, handle);
static int (*p_allgather)(const void *, int, handle, void *, int, handle, handle);
static int (*p_gather)(const void *, int, handle, void *, int, handle, int, handle);
static int (*p_gatherv)(const void *, int, handle, void *, const int *, const int *, handle, int, handle);
static int (*p_bcast)(void *, int, handle, int, handle);
static int (*p_barrier)(handle);
static int (*p_abort)(handle, int);
static handle comm_world, type_float, type_double, type_byte, op_sum;
static int active = 0, rank = 0, size = 1;

static void describe(char *error, size_t capacity, const char *format, const char *detail) {
    if (error && capacity) snprintf(error, capacity, format, detail ? detail : "");
}

int cmpi_init(const char *library, char *error, size_t capacity) {
    const char *name = library && *library ? library : "libmpi.so.40";
    // Global: Open MPI's own plugins resolve symbols of libmpi when they are loaded.
    void *lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        describe(error, capacity, "cannot load Open MPI's library (%s): install Open MPI (Debian: apt-get install openmpi-bin) "
                 "or set DISTILL_MPI_LIBRARY to libmpi.so's path", dlerror());
        return -1;
    }
    struct { void **slot; const char *symbol; } symbols[] = {
        {(void **)&p_init_thread, "MPI_Init_thread"},
        {(void **)&p_finalize, "MPI_Finalize"}, {(void **)&p_comm_rank, "MPI_Comm_rank"},
        {(void **)&p_comm_size, "MPI_Comm_size"}, {(void **)&p_allreduce, "MPI_Allreduce"},
        {(void **)&p_allgather, "MPI_Allgather"}, {(void **)&p_bcast, "MPI_Bcast"},
        {(void **)&p_gather, "MPI_Gather"}, {(void **)&p_gatherv, "MPI_Gatherv"},
        {(void **)&p_barrier, "MPI_Barrier"}, {(void **)&p_abort, "MPI_Abort"},
        {&comm_world, "ompi_mpi_comm_world"}, {&type_float, "ompi_mpi_float"}, {&type_double, "ompi_mpi_double"},
        {&type_byte, "ompi_mpi_byte"}, {&op_sum, "ompi_mpi_op_sum"},
    };
    for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; i++) {
        *symbols[i].slot = dlsym(lib, symbols[i].symbol);
        if (!*symbols[i].slot) {
            describe(error, capacity, "%s lacks an Open MPI symbol: distill runs under Open MPI (3, 4 or 5) only", name);
            return -1;
        }
    }
    int provided = 0;
    int status = p_init_thread(NULL, NULL, THREAD_FUNNELED, &provided);
    if (status != 0) {
        describe(error, capacity, "MPI_Init_thread failed%s", "");
        return status;
    }
    p_comm_rank(comm_world, &rank);
    p_comm_size(comm_world, &size);
    active = 1;
    return 0;
}

int cmpi_active(void) { return active; }
int cmpi_rank(void) { return rank; }
int cmpi_size(void) { return size; }

// MPI counts are ints: larger buffers go in pieces of at most 2^30 elements.
#define PIECE ((size_t)1 << 30)

int cmpi_allreduce_sum_float(float *values, size_t count) {
    for (size_t done = 0; done < count; done += PIECE) {
        size_t n = count - done < PIECE ? count - done : PIECE;
        int status = p_allreduce(IN_PLACE, values + done, (int)n, type_float, op_sum, comm_world);
        if (status != 0) return status;
    }
    return 0;
}

int cmpi_allreduce_sum_double(double *values, size_t count) {
    for (size_t done = 0; done < count; done += PIECE) {
        size_t n = count - done < PIECE ? count - done : PIECE;
        int status = p_allreduce(IN_PLACE, values + done, (int)n, type_double, op_sum, comm_world);
        if (status != 0) return status;
    }
    return 0;
}

int cmpi_allgather(const void *send, void *receive, size_t bytes) {
    if (bytes > INT_MAX) return -1;
    return p_allgather(send, (int)bytes, type_byte, receive, (int)bytes, type_byte, comm_world);
}

int cmpi_gather_lengths(const long long *length, long long *lengths, int root) {
    return p_gather(length, 8, type_byte, lengths, 8, type_byte, root, comm_world);
}

int cmpi_gatherv(const void *send, size_t bytes, void *receive, const int *counts, const int *offsets, int root) {
    if (bytes > INT_MAX) return -1;
    return p_gatherv(send, (int)bytes, type_byte, receive, counts, offsets, type_byte, root, comm_world);
}

int cmpi_broadcast(void *buffer, size_t bytes, int root) {
    for (size_t done = 0; done < bytes; done += PIECE) {
        size_t n = bytes - done < PIECE ? bytes - done : PIECE;
        int status = p_bcast((char *)buffer + done, (int)n, type_byte, root, comm_world);
        if (status != 0) return status;
    }
    return 0;
}

int cmpi_barrier(void) { return p_barrier(comm_world); }

int cmpi_finalize(void) {
    if (!active) return 0;
    active = 0;
    return p_finalize();
}

void cmpi_abort(int code) {
    if (active) p_abort(comm_world, code);
}

int cmpi_usable_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
    return CPU_COUNT(&set);
}

/* mpi_leak.c: a leak of our own made of an MPI object, for the sanitizer
 * builds' leak check (tests/cli_mpi_step.sh, tests/lsan.supp). It dups
 * MPI_COMM_WORLD, as trainer/dist.c does, and frees the dup only when given
 * --free; then MPI_Finalize. Under LeakSanitizer with tests/lsan.supp, the
 * run without --free must report the leak (its stack runs through
 * MPI_Comm_dup into libmpi, which a library-wide suppression would hide),
 * and the run with --free must report none (Open MPI's own allocations,
 * left for exit, are suppressed). Exit 0, or 1 on an MPI error. */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    int provided = 0, do_free = argc > 1 && !strcmp(argv[1], "--free");
    MPI_Comm dup = MPI_COMM_NULL;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "mpi_leak: MPI_Init_thread failed\n");
        return 1;
    }
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup) == MPI_SUCCESS ? 0 : 1;
    if (rc) fprintf(stderr, "mpi_leak: MPI_Comm_dup failed\n");
    if (!rc && do_free) MPI_Comm_free(&dup);
    MPI_Finalize();
    return rc;
}

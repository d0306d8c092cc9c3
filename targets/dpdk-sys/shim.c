/* Accessors for what bindgen cannot bind: the thread-local rte_errno. */
#include <rte_errno.h>

int pipec_rte_errno(void) { return rte_errno; }

/* The DPDK headers pipec binds: EAL start-up, ethdev ports, rte_flow. */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_flow.h>

/* rte_errno is a per-lcore thread-local variable, which bindgen cannot bind. */
int pipec_rte_errno(void);

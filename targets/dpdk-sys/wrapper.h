/* The DPDK headers pipec binds: EAL start-up, ethdev ports, rte_flow, rte_security. */
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_flow.h>
/* rte_security IPsec session configurations and crypto transforms (targets/cpt). */
#include <rte_crypto_sym.h>
#include <rte_security.h>

/* rte_errno is a per-lcore thread-local variable, which bindgen cannot bind. */
int pipec_rte_errno(void);

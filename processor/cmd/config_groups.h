/*
 * config_groups.h: the full list of configuration key groups, one per owner,
 * for sl_config_new. Assembled here, in processor/cmd/, because only this
 * room may see every other (processor/base/config.c names none of them).
 * Built into its own object that the sluice binary, the tests and the
 * benchmarks link beside libsluice.a.
 */
#ifndef SLUICE_CONFIG_GROUPS_H
#define SLUICE_CONFIG_GROUPS_H

#include "processor/base/config.h"

/* NULL-terminated, static, read-only; base's own keys are not in it
 * (sl_config_new registers them first). The order is that of `sluice --help`
 * and docs/CONFIGURATION.md. */
extern const sl_config_group *const sl_config_groups[];

#endif

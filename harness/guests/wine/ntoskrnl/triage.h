/*
 * Crash and hang triage inside the driver host (winedevice.exe): see triage.c.
 * The callback shim (callbacks.c) calls these from ShimEntry and from its
 * ZwLoadDriver/ZwUnloadDriver wrappers; plain C types only, because the two
 * files are built against different headers (kernel DDK vs. Win32).
 */
#ifndef KCB_TRIAGE_H
#define KCB_TRIAGE_H

/* DLL_PROCESS_ATTACH: install the last-chance exception filter. */
void kcb_triage_init(void);
/* Before the kernel loads a driver: start this process's stack-dump watcher, named after the first service. */
void kcb_triage_driver_loading(const char *service);
/* Around the kernel's unload of a driver: remember which images went away, with the service's name. */
void kcb_triage_unload_begin(void);
void kcb_triage_unload_end(const char *service);

#endif /* KCB_TRIAGE_H */

/*
 * The IOCTL interface of kcbioctl.sys, shared by the driver and its user-mode
 * client (programs/ioctl-client.c). Works in both worlds: only CTL_CODE and
 * plain constants.
 */
#ifndef KCB_IOCTL_H
#define KCB_IOCTL_H

/* \Device\KcbIoctl, reachable from user mode as \\.\KcbIoctl (\DosDevices\KcbIoctl). */
#define KCB_IOCTL_DEVICE L"\\Device\\KcbIoctl"
#define KCB_IOCTL_LINK L"\\DosDevices\\KcbIoctl"
#define KCB_IOCTL_USER_PATH L"\\\\.\\KcbIoctl"

/* Input: text bytes (not NUL-terminated). Output: the driver's reply text (not NUL-terminated). */
#define IOCTL_KCB_ECHO CTL_CODE(FILE_DEVICE_UNKNOWN, 0x801, METHOD_BUFFERED, FILE_ANY_ACCESS)

/* The most input bytes the driver prints, and the size of its reply buffer. */
#define KCB_IOCTL_MAX_TEXT 256

#endif

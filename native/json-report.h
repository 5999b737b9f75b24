/*
 * One-line JSON error reports of Corral's namespace helpers (corral-nshelper and
 * corral-podpause): {"error":MSG,"step":STEP[,"errno":N,"code":"ECODE"]} on stdout, which the
 * daemon parses. Header-only: each helper is one static binary built from one source.
 */
#ifndef CORRAL_JSON_REPORT_H
#define CORRAL_JSON_REPORT_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void json_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': fputs("\\\"", out); break;
		case '\\': fputs("\\\\", out); break;
		case '\n': fputs("\\n", out); break;
		case '\r': fputs("\\r", out); break;
		case '\t': fputs("\\t", out); break;
		default:
			if (*p < 0x20)
				fprintf(out, "\\u%04x", *p);
			else
				fputc(*p, out);
		}
	}
	fputc('"', out);
}

static const char *errno_code(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EACCES: return "EACCES";
	case EEXIST: return "EEXIST";
	case ENOTDIR: return "ENOTDIR";
	case EISDIR: return "EISDIR";
	case EINVAL: return "EINVAL";
	case EBUSY: return "EBUSY";
	case EROFS: return "EROFS";
	case ENOSPC: return "ENOSPC";
	case ENOMEM: return "ENOMEM";
	case ENAMETOOLONG: return "ENAMETOOLONG";
	case ELOOP: return "ELOOP";
	case ENODEV: return "ENODEV";
	case ENXIO: return "ENXIO";
	case EIO: return "EIO";
	case ERANGE: return "ERANGE";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	case EUSERS: return "EUSERS";
	default: return "";
	}
}

/* Prints {"error":MSG,"step":STEP[,"errno":N,"code":"ECODE"]} on one line. */
static void report_error(const char *step, int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (err) {
		size_t len = strlen(msg);
		snprintf(msg + len, sizeof(msg) - len, ": %s", strerror(err));
	}
	fputs("{\"error\":", stdout);
	json_string(stdout, msg);
	fputs(",\"step\":", stdout);
	json_string(stdout, step);
	if (err) {
		fprintf(stdout, ",\"errno\":%d", err);
		const char *code = errno_code(err);
		if (*code) {
			fputs(",\"code\":", stdout);
			json_string(stdout, code);
		}
	}
	fputs("}\n", stdout);
	fflush(stdout);
}

#endif

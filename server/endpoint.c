/* endpoint.c - what the sources and sinks share: "HOST:PORT" addresses.
 *
 * Runs on the I/O thread when sources and sinks start (and on any thread in
 * tests: it keeps no state). No name resolution: a host is an IPv4 address,
 * a bracketed IPv6 address, or "localhost" (127.0.0.1), so starting a
 * pipeline never waits on DNS.
 */
#include "endpoint.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HOST_MAX 64 /* an IPv6 address with a zone id fits */

/* "0".."65535", digits only. */
static int parse_port(const char *s) {
  if (*s == '\0' || strlen(s) > 5)
    return -1;
  int port = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9')
      return -1;
    port = port * 10 + (*s - '0');
  }
  return port <= 65535 ? port : -1;
}

/* Splits hostport into host (copied into buf) and the port's text. */
static const char *split_host(const char *hostport, char *buf, int *v6) {
  const char *colon, *host = hostport;
  size_t n;
  *v6 = hostport[0] == '[';
  if (*v6) {
    const char *close = strchr(hostport, ']');
    if (!close || close[1] != ':')
      return NULL;
    host = hostport + 1;
    n = (size_t)(close - host);
    colon = close + 1;
  } else {
    colon = strrchr(hostport, ':');
    if (!colon || strchr(hostport, ':') != colon)
      return NULL; /* no port, or an IPv6 address without brackets */
    n = (size_t)(colon - host);
  }
  if (n == 0 || n >= HOST_MAX)
    return NULL;
  memcpy(buf, host, n);
  buf[n] = '\0';
  return colon + 1;
}

int sl_endpoint_parse_addr(const char *hostport,
                           struct sockaddr_storage *addr) {
  char host[HOST_MAX];
  int v6;
  if (!hostport || !addr)
    return -1;
  const char *port_s = split_host(hostport, host, &v6);
  int port = port_s ? parse_port(port_s) : -1;
  if (port < 0)
    return -1;
  memset(addr, 0, sizeof *addr);
  if (v6)
    return uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr) ? -1 : 0;
  if (strcasecmp(host, "localhost") == 0)
    strcpy(host, "127.0.0.1");
  return uv_ip4_addr(host, port, (struct sockaddr_in *)addr) ? -1 : 0;
}

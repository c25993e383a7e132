package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// URLError reports a Redis URL that cannot be used. URL has its password
// replaced, so the error is safe to log.
type URLError struct {
	URL    string // redacted
	Reason string
}

func (e *URLError) Error() string {
	return fmt.Sprintf("store: redis URL %q: %s", e.URL, e.Reason)
}

// redisConfig is a parsed Redis URL: exactly one of the three is set.
type redisConfig struct {
	simple   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// client builds the go-redis client for the config.
//
// go-redis's own retries are turned off (MaxRetries -1): it would send a
// command again after a read timeout or a dropped connection, when the first
// copy may already have run, and the store's scripts are not idempotent (a
// modem-queue claim or release run twice, a compare-and-set that then finds
// its own write and reports that it lost, a GETDEL whose value is gone). A
// failed call returns its error; spareline retries where a retry is safe
// (the dispatcher's link retries, the queue's release-and-claim-again, the
// store probe).
//
// go-redis's ContextTimeoutEnabled is turned on: without it a command's
// socket reads and writes ignore the caller's context deadline and wait for
// the client's read_timeout (5 s) instead, so that every bound spareline
// puts on a store call (/readyz and /message: 2 s; the status page; a
// carrier's receipt, answered ESME_RX_T_APPN before the SMSC gives up on
// it) stretched to 5 s against a Redis that hangs (SIGSTOP, a stalled disk,
// a network that drops packets). A call whose deadline passes mid-command
// closes its connection: the command may or may not have run, as after a
// read timeout. Cancellation without a deadline is not applied to reads
// (go-redis sets socket deadlines only).
func (c *redisConfig) client() redis.UniversalClient {
	switch {
	case c.failover != nil:
		c.failover.MaxRetries = -1
		c.failover.ContextTimeoutEnabled = true
		return redis.NewFailoverClient(c.failover)
	case c.cluster != nil:
		c.cluster.MaxRetries = -1
		c.cluster.ContextTimeoutEnabled = true
		return redis.NewClusterClient(c.cluster)
	default:
		c.simple.MaxRetries = -1
		c.simple.ContextTimeoutEnabled = true
		return redis.NewClient(c.simple)
	}
}

// addrs lists the configured server addresses, for logs and errors.
func (c *redisConfig) addrs() []string {
	switch {
	case c.failover != nil:
		return c.failover.SentinelAddrs
	case c.cluster != nil:
		return c.cluster.Addrs
	default:
		return []string{c.simple.Addr}
	}
}

// redactURL hides the password of a URL's userinfo without parsing it (the
// multi-host forms are not valid net/url URLs).
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return raw
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return raw
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// checkAddr says what is wrong with a server address of a Redis URL (""
// when nothing is): it must be host:port with a port in 1-65535. addr
// never holds the URL's user information.
func checkAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("address %q: want host:port", addr)
	}
	if host == "" {
		return fmt.Sprintf("address %q: empty host", addr)
	}
	n, err := strconv.Atoi(port)
	switch {
	case err != nil && !allDigits(port):
		return fmt.Sprintf("address %q: port %q is not a number", addr, port)
	case err != nil || n < 1 || n > 65535:
		return fmt.Sprintf("address %q: port %s is out of range: want 1-65535 (Redis listens on 6379, Sentinel on 26379)", addr, port)
	}
	return ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseRedisURL parses the store's Redis URL forms (see the package doc).
// CheckRedisURL reports what NewRedis would refuse in a URL (scheme,
// address, database number, options), without connecting: `spareline check`
// and a reload refuse a URL that a start would refuse. The error names the
// URL with its password redacted.
func CheckRedisURL(raw string) error {
	_, err := parseRedisURL(raw)
	if ue := (*URLError)(nil); errors.As(err, &ue) {
		return errors.New(ue.Reason)
	}
	return err
}

func parseRedisURL(raw string) (*redisConfig, error) {
	bad := func(format string, args ...any) error {
		return &URLError{URL: redactURL(raw), Reason: fmt.Sprintf(format, args...)}
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, bad("no scheme: want redis://, rediss://, redis-sentinel:// or redis-cluster://")
	}
	switch scheme {
	case "redis", "rediss":
		if _, query, _ := strings.Cut(rest, "?"); strings.Contains(query, "max_retries") {
			return nil, bad("max_retries: spareline turns go-redis's retries off (a command sent again may run twice); remove it")
		}
		o, err := redis.ParseURL(raw)
		if err != nil {
			// A *url.Error quotes the whole URL, password included.
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, bad("%v", err)
		}
		// url.Parse takes any digits as a port: 63799 would only fail at
		// the first dial.
		if msg := checkAddr(o.Addr); msg != "" {
			return nil, bad("%s", msg)
		}
		return &redisConfig{simple: o}, nil
	case "redis-sentinel", "redis-cluster":
	default:
		return nil, bad("unknown scheme %q: want redis://, rediss://, redis-sentinel:// or redis-cluster://", scheme)
	}

	rest, query, _ := strings.Cut(rest, "?")
	if strings.Contains(rest, "#") {
		return nil, bad("a fragment (#) is not allowed")
	}
	hostpart, path, _ := strings.Cut(rest, "/")
	var username, password string
	if at := strings.LastIndex(hostpart, "@"); at >= 0 {
		var err error
		userinfo := hostpart[:at]
		hostpart = hostpart[at+1:]
		u, p, _ := strings.Cut(userinfo, ":")
		if username, err = url.PathUnescape(u); err != nil {
			return nil, bad("bad escape in the user name")
		}
		if password, err = url.PathUnescape(p); err != nil {
			return nil, bad("bad escape in the password")
		}
	}
	var addrs []string
	for h := range strings.SplitSeq(hostpart, ",") {
		if msg := checkAddr(h); msg != "" {
			return nil, bad("%s", msg)
		}
		host, port, _ := net.SplitHostPort(h)
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, bad("bad query string")
	}
	db := 0
	if v := q.Get("db"); v != "" {
		if db, err = strconv.Atoi(v); err != nil || db < 0 {
			return nil, bad("db=%q: want a database number", v)
		}
	}
	q.Del("db")
	sentinelPassword := q.Get("sentinel_password")
	q.Del("sentinel_password")
	for k := range q {
		return nil, bad("unknown parameter %q (known: db, sentinel_password)", k)
	}

	if scheme == "redis-cluster" {
		if path != "" {
			return nil, bad("a cluster URL has no path")
		}
		if db != 0 || sentinelPassword != "" {
			return nil, bad("db and sentinel_password do not apply to a cluster")
		}
		return &redisConfig{cluster: &redis.ClusterOptions{Addrs: addrs, Username: username, Password: password}}, nil
	}
	master, err := url.PathUnescape(path)
	if err != nil || master == "" || strings.Contains(master, "/") {
		return nil, bad("want the master name as the path: redis-sentinel://host:port,.../mymaster")
	}
	return &redisConfig{failover: &redis.FailoverOptions{
		MasterName:       master,
		SentinelAddrs:    addrs,
		SentinelPassword: sentinelPassword,
		Username:         username,
		Password:         password,
		DB:               db,
	}}, nil
}

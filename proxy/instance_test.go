package proxy

import (
	"net"
	"os"
	"testing"
)

// The configured instance names the gateway in shared account leases; without
// it, the host name and the listen addresses do.
func TestInstanceName(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lns := []net.Listener{ln}
	if got := instanceName("spareline-1", lns); got != "spareline-1" {
		t.Errorf("configured: %q, want spareline-1", got)
	}
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	if got, want := instanceName("", lns), host+"/"+ln.Addr().String(); got != want {
		t.Errorf("default: %q, want %q", got, want)
	}
}

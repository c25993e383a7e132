package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/modemsim"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// carriers[].tls_ca and tls_server_name: the carrier's certificate is
// verified against the configured CA bundle, for the configured name. A
// certificate that does not verify keeps the carrier down (logged as a
// certificate verification failure), and the platform's messages go by modem
// as for any carrier that is down. A reload that changes the CA reconnects.

// testPKI is a private CA and a server certificate it signed for dnsName
// only (no IP address: the carrier is dialled at 127.0.0.1, so only
// tls_server_name can make the name match).
type testPKI struct {
	caFile string          // PEM of the CA certificate
	server tls.Certificate // leaf + key, served by the TLS front
}

func newTestPKI(t *testing.T, dnsName string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "spareline test CA " + dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{dnsName},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return testPKI{caFile: caFile, server: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}}
}

// tlsCAConfig is a gateway config with one TLS carrier (mobile) and the
// given modems; carrierTLS is the carrier's extra TLS keys.
func tlsCAConfig(storeDir, carrierAddr, carrierTLS, modemsYAML string) string {
	return fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "" }
store: { path: %q }
accounts:
  - { system_id: platform, password: secret }
carriers:
  - { name: mobile, address: %q, system_id: ent01, password: pw-mob, tls: true, %s }
routing: { country_code: "86", preset: cn }
%s%s`, storeDir, carrierAddr, carrierTLS, modemsYAML, failoverYAML)
}

// waitVerificationFailure waits for the log entry that says the carrier's
// certificate was refused, among entries after the first skip ones, and
// returns how many entries there are now.
func waitVerificationFailure(ctx context.Context, t *testing.T, logs *observer.ObservedLogs, skip int) int {
	t.Helper()
	for {
		all := logs.All()
		for _, e := range all[min(skip, len(all)):] {
			if !strings.Contains(e.Message, "TLS certificate refused") {
				continue
			}
			if msg := fmt.Sprint(e.ContextMap()["error"]); !strings.Contains(msg, "certificate verification failed") {
				t.Fatalf("verification failure logged without saying so: %q", msg)
			}
			return len(all)
		}
		select {
		case <-ctx.Done():
			for _, e := range logs.All()[skip:] {
				t.Logf("%s %s %v", e.Level, e.Message, e.ContextMap())
			}
			t.Fatal("no certificate verification failure was logged")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitHealth waits until the gateway holds the carrier in state want (the
// simulator counts a bind before the gateway has read its bind_resp).
func waitHealth(ctx context.Context, t *testing.T, gw *proxy.Gateway, carrier string, want proxy.CarrierState) {
	t.Helper()
	for gw.Health.State(carrier) != want {
		select {
		case <-ctx.Done():
			t.Fatalf("carrier %s never %s", carrier, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// submitByModem submits one message with a receipt requested and checks
// that the platform gets OK, the modem sends it and a DELIVRD receipt with
// our id comes back.
func submitByModem(ctx context.Context, t *testing.T, c *platform.Client, sim *modemsim.Sim, text string) {
	t.Helper()
	before := len(sim.Sent())
	r, err := c.Submit(ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: text, RegisteredDelivery: 1})
	if err != nil || r.Status != 0 {
		t.Fatalf("submit while the carrier is down: %v status 0x%X", err, r.Status)
	}
	sent, err := sim.WaitSent(ctx, before+1)
	if err != nil {
		t.Fatal(err)
	}
	if got := sent[before].Text; got != text {
		t.Fatalf("modem sent %q, want %q", got, text)
	}
	select {
	case rc := <-c.Receipts():
		if rc.ID != r.MessageID || rc.Stat != "DELIVRD" {
			t.Fatalf("receipt %+v for %s", rc.ReceiptFields, r.MessageID)
		}
	case <-ctx.Done():
		t.Fatal("no receipt for the modem-sent message")
	}
}

// The carrier's certificate, signed by a private CA for a DNS name, is
// verified with tls_ca and tls_server_name while the carrier is dialled by
// IP address; the platform's message reaches the carrier.
func TestTLSCAVerifiedCarrier(t *testing.T) {
	pki := newTestPKI(t, "smsc.mobile.test")
	smsc := startSMSC(t, "pw-mob")
	front := tlsFront(t, pki.server, smsc.Addr())
	gw, _, ctx := secGateway(t, tlsCAConfig(t.TempDir(), front,
		fmt.Sprintf("tls_ca: %q, tls_server_name: smsc.mobile.test", pki.caFile), ""))
	if err := smsc.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.Bound >= 1 }); err != nil {
		t.Fatalf("carrier over verified TLS never bound: %v", err)
	}
	waitHealth(ctx, t, gw, "mobile", proxy.StateUp)
	c, err := platform.Dial(ctx, gw.SMPPAddr().String(), "platform", "secret", platform.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r, err := c.Submit(ctx, platform.Submit{Src: "10690001", Dest: "13800138000", Text: "verified tls"})
	if err != nil || r.Status != 0 {
		t.Fatalf("submit: %v status 0x%X", err, r.Status)
	}
	if err := smsc.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if txt, _ := smsc.Received()[0].Text(); txt != "verified tls" {
		t.Fatalf("carrier received %q", txt)
	}
}

// A certificate that does not verify (signed by another CA, or for another
// name) never lets the carrier bind: the failure is logged as certificate
// verification, the carrier stays down and the platform's messages go by
// modem with their receipts.
func TestTLSCAWrongCAFailsBind(t *testing.T) {
	cases := []struct {
		name string
		keys func(right, other testPKI) string
	}{
		{"other CA", func(_, other testPKI) string {
			return fmt.Sprintf("tls_ca: %q, tls_server_name: smsc.mobile.test", other.caFile)
		}},
		{"other name", func(right, _ testPKI) string {
			return fmt.Sprintf("tls_ca: %q, tls_server_name: smsc.unicom.test", right.caFile)
		}},
		{"no name for an IP address", func(right, _ testPKI) string {
			return fmt.Sprintf("tls_ca: %q", right.caFile)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			right, other := newTestPKI(t, "smsc.mobile.test"), newTestPKI(t, "smsc.mobile.test")
			smsc := startSMSC(t, "pw-mob")
			front := tlsFront(t, right.server, smsc.Addr())
			sims, my := startModems(t, 1)
			gw, logs, ctx := secGateway(t, tlsCAConfig(t.TempDir(), front, tc.keys(right, other), my))
			waitVerificationFailure(ctx, t, logs, 0)
			if st := smsc.Stats(); st.Binds != 0 || st.Bound != 0 {
				t.Fatalf("carrier bound through a certificate that does not verify: %+v", st)
			}
			if st := gw.Health.State("mobile"); st != proxy.StateDown {
				t.Fatalf("carrier state %s, want down", st)
			}
			c, err := platform.Dial(ctx, gw.SMPPAddr().String(), "platform", "secret", platform.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			submitByModem(ctx, t, c, sims[0], "by modem: "+tc.name)
			if n := len(smsc.Received()); n != 0 {
				t.Fatalf("carrier received %d messages", n)
			}
		})
	}
}

// A reload that changes tls_ca is a connection setting: the bound carrier
// is unbound and dials again under the new CA (here a wrong one: it goes
// down and traffic goes by modem); reloading the right CA binds it again.
func TestTLSCAReloadReconnects(t *testing.T) {
	right, other := newTestPKI(t, "smsc.mobile.test"), newTestPKI(t, "smsc.mobile.test")
	smsc := startSMSC(t, "pw-mob")
	front := tlsFront(t, right.server, smsc.Addr())
	sims, my := startModems(t, 1)
	storeDir := t.TempDir()
	yamlFor := func(ca string) *config.Config {
		t.Helper()
		text := tlsCAConfig(storeDir, front, fmt.Sprintf("tls_ca: %q, tls_server_name: smsc.mobile.test", ca), my)
		cfg, err := config.Parse([]byte(text), "reload.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	gw, logs, ctx := secGateway(t, tlsCAConfig(storeDir, front,
		fmt.Sprintf("tls_ca: %q, tls_server_name: smsc.mobile.test", right.caFile), my))
	if err := smsc.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.Bound >= 1 }); err != nil {
		t.Fatalf("carrier never bound: %v", err)
	}

	mark := len(logs.All())
	if err := gw.Reload(yamlFor(other.caFile)); err != nil {
		t.Fatal(err)
	}
	waitVerificationFailure(ctx, t, logs, mark)
	if err := smsc.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.Bound == 0 }); err != nil {
		t.Fatalf("carrier still bound under a CA that does not verify it: %v", err)
	}
	waitHealth(ctx, t, gw, "mobile", proxy.StateDown)
	c, err := platform.Dial(ctx, gw.SMPPAddr().String(), "platform", "secret", platform.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	submitByModem(ctx, t, c, sims[0], "by modem after reload")

	if err := gw.Reload(yamlFor(right.caFile)); err != nil {
		t.Fatal(err)
	}
	if err := smsc.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.Bound >= 1 && s.Binds >= 2 }); err != nil {
		t.Fatalf("carrier did not bind again with the right CA: %v", err)
	}
}

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
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/spareline/spareline/config"
	"github.com/spareline/spareline/proxy"
	"github.com/spareline/spareline/test/platform"
	"github.com/spareline/spareline/test/smscsim"
)

// Security: SMPP over TLS both ways, account allow lists, passwords from the
// environment and files, and no secret in the logs.

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "spareline test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// tlsFront terminates TLS in front of a plain SMSC simulator, as an
// operator's TLS endpoint does.
func tlsFront(t *testing.T, cert tls.Certificate, target string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(s, c); _ = s.Close() }()
				_, _ = io.Copy(c, s)
			}()
		}
	}()
	return ln.Addr().String()
}

// secGateway starts a gateway from yaml with every log entry, at debug
// level, captured.
func secGateway(t *testing.T, yaml string) (*proxy.Gateway, *observer.ObservedLogs, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cfg, err := config.Parse([]byte(yaml), "security.yaml")
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	gw, err := proxy.NewGateway(ctx, cfg, proxy.GatewayOptions{Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		gw.Shutdown(sctx)
	})
	return gw, logs, ctx
}

func startSMSC(t *testing.T, password string) *smscsim.SMSC {
	t.Helper()
	s, err := smscsim.Start(smscsim.Options{Name: "mobile", SystemID: "ent01", Password: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// A platform binds over TLS (smpp.tls_listen) and its message reaches a
// carrier reached over TLS (carriers[].tls with tls_insecure, through a
// TLS-terminating front). A plain TCP client on the TLS port gets no SMPP
// answer and is closed.
func TestSecurityTLSBothWays(t *testing.T) {
	certFile, keyFile, cert := selfSigned(t)
	smsc := startSMSC(t, "pw-mob")
	front := tlsFront(t, cert, smsc.Addr())
	gw, _, ctx := secGateway(t, fmt.Sprintf(`smpp: { listen: "", tls_listen: "127.0.0.1:0", tls_cert: %q, tls_key: %q }
http: { listen: "" }
store: { path: %q }
accounts:
  - { system_id: platform, password: secret }
carriers:
  - { name: mobile, address: %q, system_id: ent01, password: pw-mob, tls: true, tls_insecure: true }
routing: { country_code: "86", preset: cn }
`, certFile, keyFile, t.TempDir(), front))
	if err := smsc.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.Bound >= 1 }); err != nil {
		t.Fatalf("carrier over TLS never bound: %v", err)
	}
	waitHealth(ctx, t, gw, "mobile", proxy.StateUp)
	// The TLS listener: smpp.listen is off.
	addr := gw.SMPPAddr().String()
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // #nosec G402 -- self-signed test cert
	if err != nil {
		t.Fatal(err)
	}
	r := &rawConn{t: t, c: tc}
	t.Cleanup(func() { _ = tc.Close() })
	r.bind(idBindTRX)
	r.send(idSubmitSM, 2, submitBody("13800138000", 0, 0, 8, []byte("over tls")))
	r.expect(idSubmitSM|respBit, 0, 2)
	if err := smsc.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if txt, _ := smsc.Received()[0].Text(); txt != "over tls" {
		t.Fatalf("carrier received %q", txt)
	}

	// Plain SMPP on the TLS port: the handshake fails, no SMPP answer.
	pc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	plain := &rawConn{t: t, c: pc}
	plain.send(idBindTRX, 1, bindPDUBody("platform", "secret"))
	p, err := plain.tryRead()
	if err == nil && p.ID == idBindTRX|respBit {
		t.Fatalf("a plain-TCP bind was answered on the TLS port: %+v", p)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("plain connection on the TLS port left hanging")
	}
}

// An account's allow list is checked against the source address:
// ESME_RBINDFAIL from outside it (and counted), OK from inside.
func TestSecurityAllowListRefusesOtherSources(t *testing.T) {
	smsc := startSMSC(t, "pw-mob")
	gw, logs, ctx := secGateway(t, fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "" }
store: { path: %q }
accounts:
  - { system_id: platform, password: secret, allow: ["127.0.0.1/32"] }
carriers:
  - { name: mobile, address: %q, system_id: ent01, password: pw-mob }
routing: { country_code: "86", preset: cn }
`, t.TempDir(), smsc.Addr()))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c, err := d.DialContext(ctx, "tcp", gw.SMPPAddr().String())
	if err != nil {
		t.Skipf("cannot use 127.0.0.2 as a source here: %v", err)
	}
	outside := &rawConn{t: t, c: c}
	t.Cleanup(func() { _ = c.Close() })
	outside.send(idBindTX, 1, bindPDUBody("platform", "secret"))
	outside.expect(idBindTX|respBit, 0x0D, 1) // ESME_RBINDFAIL
	if logs.FilterMessage("platform bind refused").FilterField(zap.String("reason", "address")).Len() == 0 {
		t.Fatal("the refused bind was not logged with its reason")
	}
	in, err := net.Dial("tcp", gw.SMPPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close() })
	(&rawConn{t: t, c: in}).bind(idBindTX)
}

// Passwords come from password_env (an account) and password_file (a
// carrier); failed binds both ways log no password.
func TestSecurityPasswordSourcesAndNoSecretsInLogs(t *testing.T) {
	const accountPW, carrierPW, wrongPW = "envPW-7q", "filPW-3x", "guessPW9"
	t.Setenv("SPARELINE_E2E_PLATFORM_PW", accountPW)
	pwFile := filepath.Join(t.TempDir(), "carrier.pw")
	if err := os.WriteFile(pwFile, []byte(carrierPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := startSMSC(t, carrierPW)
	bad := startSMSC(t, "other")
	bad.RefuseBinds(0x0E) // ESME_RINVPASWD: the carrier refuses spareline's password
	gw, logs, ctx := secGateway(t, fmt.Sprintf(`smpp: { listen: "127.0.0.1:0" }
http: { listen: "" }
store: { path: %q }
accounts:
  - { system_id: platform, password_env: SPARELINE_E2E_PLATFORM_PW }
carriers:
  - { name: mobile, address: %q, system_id: ent01, password_file: %q }
  - { name: unicom, address: %q, system_id: ent01, password_file: %q }
routing: { country_code: "86", preset: cn }
`, t.TempDir(), good.Addr(), pwFile, bad.Addr(), pwFile))
	if err := good.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.Bound >= 1 }); err != nil {
		t.Fatalf("carrier with password_file never bound: %v", err)
	}
	// The simulator counts the bind when it answers it; the gateway takes
	// the bind a moment later.
	waitHealth(ctx, t, gw, "mobile", proxy.StateUp)
	if err := bad.WaitUntil(ctx, func(s smscsim.Stats) bool { return s.BindsRefused >= 1 }); err != nil {
		t.Fatal(err)
	}
	for gw.Carrier("unicom").BindStates()[0] != "auth_failed" { // polled: no event for the bind state
		select {
		case <-ctx.Done():
			t.Fatalf("unicom bind state %v", gw.Carrier("unicom").BindStates())
		case <-time.After(10 * time.Millisecond):
		}
	}
	c, err := platform.Dial(ctx, gw.SMPPAddr().String(), "platform", accountPW, platform.Options{BindType: platform.BindTX})
	if err != nil {
		t.Fatalf("bind with the password from password_env: %v", err)
	}
	defer c.Close()
	if r, err := c.Submit(ctx, platform.Submit{Dest: "13800138000", Text: "env and file"}); err != nil || r.Status != 0 {
		t.Fatalf("submit: %v 0x%X", err, r.Status)
	}
	if _, err := platform.Dial(ctx, gw.SMPPAddr().String(), "platform", wrongPW, platform.Options{BindType: platform.BindTX}); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	if logs.FilterMessage("platform bind refused").Len() == 0 {
		t.Fatal("the refused bind was not logged")
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	n := 0
	for _, e := range logs.All() {
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Fatal(err)
		}
		line := buf.String()
		n++
		for _, secret := range []string{accountPW, carrierPW, wrongPW} {
			if strings.Contains(line, secret) {
				t.Errorf("a password is in the log: %s", line)
			}
		}
	}
	t.Logf("%d log entries at debug level checked for 3 passwords", n)
}

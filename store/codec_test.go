package store

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMessageCodecRoundTrip(t *testing.T) {
	for _, m := range []*Message{
		testMessage("full"),
		{ID: "empty"},
		{ID: "neg", Attempts: -1, ModemRefs: []int{-5, 255}, Created: time.Unix(-1, 999999999)},
		{ID: "raw", CarrierID: "123", CarrierMsgID: "000123"},
		{ID: "rawdone", CarrierID: "255", CarrierMsgID: "FF", FinalStat: "DELIVRD", Done: time.Unix(1700000000, 0)},
	} {
		got, err := decodeMessage(encodeMessage(m))
		if err != nil {
			t.Fatalf("%s: %v", m.ID, err)
		}
		sameMessage(t, got, m)
	}
}

func TestDecodeNamesFieldAndOffset(t *testing.T) {
	b := encodeMessage(testMessage("x"))
	_, err := decodeMessage(b[:20])
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Record != "message" || ce.Offset == 0 || ce.Field == "" {
		t.Fatalf("truncated record: %v", err)
	}
	b[0] = 9
	if _, err := decodeMessage(b); !errors.As(err, &ce) || ce.Field != "version" || ce.Offset != 0 {
		t.Fatalf("bad version: %v", err)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMessage(testMessage("seed")))
	f.Add(encodeMessage(&Message{}))
	f.Add(encodeMessage(&Message{ID: "raw", CarrierID: "123", CarrierMsgID: "000123"}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Offset < 0 || ce.Offset > len(b) {
				t.Fatalf("error %v is not a CorruptError within the input", err)
			}
			return
		}
		// A record that decodes encodes back to the same octets.
		if again := encodeMessage(m); !bytes.Equal(again, b) {
			m2, err := decodeMessage(again)
			if err != nil || !reflect.DeepEqual(m2, m) {
				t.Fatalf("re-encoding changed the message: %v", err)
			}
		}
	})
}

func FuzzDecodeDelivery(f *testing.F) {
	f.Add(encodeDelivery(&Delivery{ID: "1", Account: "a", Body: []byte("id:1 stat:DELIVRD"), MsgID: "m", Created: time.Now()}))
	f.Add([]byte{1, 0, 0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDelivery(b)
		if err != nil {
			return
		}
		d2, err := decodeDelivery(encodeDelivery(d))
		if err != nil || !reflect.DeepEqual(d, d2) {
			t.Fatalf("round trip: %+v vs %+v (%v)", d, d2, err)
		}
	})
}

func TestParseRedisURL(t *testing.T) {
	for _, c := range []struct {
		url  string
		kind string
		addr []string
		want func(*redisConfig) bool
	}{
		{"redis://127.0.0.1:6379/2", "simple", []string{"127.0.0.1:6379"}, func(c *redisConfig) bool { return c.simple.DB == 2 }},
		{"rediss://u:p@h:6380", "simple", []string{"h:6380"}, func(c *redisConfig) bool {
			return c.simple.TLSConfig != nil && c.simple.Username == "u" && c.simple.Password == "p"
		}},
		{"redis-sentinel://:pw@s1:26379,s2:26379/mymaster?db=1&sentinel_password=sp", "failover", []string{"s1:26379", "s2:26379"},
			func(c *redisConfig) bool {
				f := c.failover
				return f.MasterName == "mymaster" && f.Password == "pw" && f.DB == 1 && f.SentinelPassword == "sp"
			}},
		{"redis-sentinel://s1:26379/m", "failover", []string{"s1:26379"}, func(c *redisConfig) bool { return c.failover.Password == "" }},
		{"redis-cluster://n1:7000,[::1]:7001", "cluster", []string{"n1:7000", "[::1]:7001"}, nil},
		{"redis://localhost:63799", "simple", []string{"localhost:63799"}, nil}, // unusual, but a port
	} {
		cfg, err := parseRedisURL(c.url)
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		kind := "simple"
		if cfg.failover != nil {
			kind = "failover"
		} else if cfg.cluster != nil {
			kind = "cluster"
		}
		if kind != c.kind || !reflect.DeepEqual(cfg.addrs(), c.addr) || (c.want != nil && !c.want(cfg)) {
			t.Errorf("%s: kind %s addrs %v", c.url, kind, cfg.addrs())
		}
		// go-redis must never send a command twice (client's doc).
		_ = cfg.client().Close()
		retries := map[string]int{}
		if cfg.simple != nil {
			retries["simple"] = cfg.simple.MaxRetries
		}
		if cfg.failover != nil {
			retries["failover"] = cfg.failover.MaxRetries
		}
		if cfg.cluster != nil {
			retries["cluster"] = cfg.cluster.MaxRetries
		}
		if retries[kind] != -1 {
			t.Errorf("%s: go-redis MaxRetries %d, want -1 (no retries)", c.url, retries[kind])
		}
	}
	for _, bad := range []string{
		"", "localhost:6379", "http://h:1", "redis-sentinel://:secret@h:1", "redis-sentinel://:secret@h/m",
		"redis-sentinel://h:1,/m", "redis-sentinel://h:99999/m", "redis-cluster://h:1/x", "redis-cluster://h:1?db=2",
		"redis-sentinel://h:1/m?colour=red", "redis://:secret@h:1/notanumber", "redis://:secret@h:1/0?max_retries=3",
		"redis://:secret@localhost:637990", "rediss://:secret@h:0", "redis-cluster://:secret@a:1,b:70000",
	} {
		_, err := parseRedisURL(bad)
		var ue *URLError
		if !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a *URLError", bad, err)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: error shows the password: %v", bad, err)
		}
	}
}

func FuzzParseRedisURL(f *testing.F) {
	for _, s := range []string{
		"redis://127.0.0.1:6379/0", "rediss://u:p@h:1", "redis-sentinel://:pw@a:1,b:2/master?db=3",
		"redis-cluster://a:1,b:2", "redis-sentinel://x%zz@a:1/m", "redis://[::1]:6379",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := parseRedisURL(s)
		if err != nil {
			var ue *URLError
			if !errors.As(err, &ue) {
				t.Fatalf("%q: error %T is not a *URLError", s, err)
			}
			return
		}
		n := 0
		for _, set := range []bool{cfg.simple != nil, cfg.failover != nil, cfg.cluster != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%q: %d client kinds", s, n)
		}
		if len(cfg.addrs()) == 0 {
			t.Fatalf("%q: no address", s)
		}
	})
}

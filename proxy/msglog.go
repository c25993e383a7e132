package proxy

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/linxGnu/gosmpp/data"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/spareline/spareline/store"
)

// The message log (config log.messages): one JSON line per message event,
// what Kannel calls its access log, so that "what happened to the message
// to 138****8000 at 02:14?" can be answered after the fact. The events:
//
//   - submit: a platform's submit_sm (data_sm, each destination of a
//     submit_multi) answered: status, to, from, carrier, carrier_id, path;
//   - failover: a message moved to the modem queue, with the reason;
//   - modem_sent, modem_failed: a modem send's outcome;
//   - returned: a queued message taken back by its recovered carrier;
//   - receipt: a carrier's receipt matched to its message, or the modem
//     path's outcome (carrier "modem");
//   - unmatched_receipt: a carrier's receipt that no message matched within
//     the carrier's unmatched_receipts_after, given to the platform as the
//     carrier sent it (unmatched.go; "id" empty, "carrier_id" the
//     carrier's);
//   - receipt_delivered: the platform answered the deliver_sm of a receipt
//     (an unmatched one's has an empty "id");
//   - mo, mo_delivered: an MO message stored for the platform, and the
//     platform's answer to its deliver_sm.
//
// Every line has "ts", "event", "id" (the message id the platform knows;
// "part" is the destination's own id in a submit_multi) and "account".
// Numbers are masked (maskNumber); the message text and passwords are never
// written.
//
// Cost: with the log off (the default), each event costs the message path
// one atomic pointer load and a nil check (Dispatcher.mlog), no allocation.
// With it on, lines are encoded by zap into a zapcore.BufferedWriteSyncer
// that writes the file every second (or when 256 kB are buffered), so a
// slow disk holds a message up only when the buffer is full. Its flush does
// not fsync: a crash of the process loses the lines still in the buffer
// (up to a second of them), a power cut also what the kernel had not
// written yet. A failed write is counted in
// spareline_message_log_errors_total and logged on the main log at most
// once a minute; the lines of that write are lost, the messages are not
// affected, and the next write tries again.

var metricMessageLogErrors = promauto.NewCounter(prometheus.CounterOpts{
	Name: "spareline_message_log_errors_total",
	Help: "Failed writes to the message log file (log.messages), whose lines are lost, and events that came after the log was closed.",
})

const (
	// msgLogFlushEvery is how often buffered lines are written to the file.
	msgLogFlushEvery = time.Second
	// msgLogBuffer is the most buffered before a write goes to the file at once.
	msgLogBuffer = 256 << 10
	// msgLogReportEvery is how often write errors are logged on the main log.
	msgLogReportEvery = time.Minute
	// msgLogRetireAfter is how long a log turned off by a reload stays open
	// for the events that loaded it just before.
	msgLogRetireAfter = time.Second
	// msgLogMode is the mode of a new file (before the umask).
	msgLogMode = 0o640
)

// MessageLog is an open message log: a zap logger writing JSON lines,
// through a buffer, into a file that a reload can swap.
type MessageLog struct {
	zl        *zap.Logger
	bws       *zapcore.BufferedWriteSyncer
	out       *logFile
	closeOnce sync.Once
	gate      closeGate // events after Close are counted as lost, not buffered
}

// closableCore drops (and counts) the events that come after Close: the
// stopped buffer would keep them unwritten, or start a flush goroutine
// that nobody stops. Close takes gate's write lock to set closed, so no
// event is between its check and its write to the buffer then.
type closableCore struct {
	zapcore.Core
	gate *closeGate
}

type closeGate struct {
	mu     sync.RWMutex
	closed bool
}

func (c closableCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c closableCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	c.gate.mu.RLock()
	defer c.gate.mu.RUnlock()
	if c.gate.closed {
		metricMessageLogErrors.Inc()
		return nil
	}
	return c.Core.Write(e, fs)
}

func (c closableCore) With(fs []zapcore.Field) zapcore.Core {
	return closableCore{Core: c.Core.With(fs), gate: c.gate}
}

// openLogFile opens path for append, creating it with msgLogMode. Only a
// regular file (or /dev/stdout, /dev/stderr) is taken: opened without
// O_NONBLOCK, a FIFO created after the config check would hang the reload
// (and the signals it handles), and a typo naming a device (/dev/ttyUSB0)
// would write into a modem's port.
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NONBLOCK, msgLogMode)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() && path != "/dev/stdout" && path != "/dev/stderr" {
		err = fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// newMessageLog makes the log writing to f, opened at path; main is the
// logger its write errors are reported on.
func newMessageLog(f *os.File, path string, main *zap.Logger) *MessageLog {
	out := &logFile{f: f, path: path, log: main}
	bws := &zapcore.BufferedWriteSyncer{WS: out, Size: msgLogBuffer, FlushInterval: msgLogFlushEvery}
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		TimeKey:        "ts",
		MessageKey:     "event",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeTime:     zapcore.ISO8601TimeEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
	})
	// No level, caller or stack trace keys: every line is an event. No
	// sampling either: every event is written.
	ml := &MessageLog{bws: bws, out: out}
	ml.zl = zap.New(closableCore{Core: zapcore.NewCore(enc, bws, zapcore.InfoLevel), gate: &ml.gate})
	return ml
}

// Path is the file the log writes to.
func (ml *MessageLog) Path() string {
	ml.out.mu.Lock()
	defer ml.out.mu.Unlock()
	return ml.out.path
}

// Sync writes the buffered lines to the file now.
func (ml *MessageLog) Sync() error { return ml.bws.Sync() }

// reopen writes the buffered lines to the current file, then goes on in f
// (opened at path) and closes the current file.
func (ml *MessageLog) reopen(f *os.File, path string) {
	_ = ml.bws.Sync()
	if old := ml.out.swap(f, path); old != nil && old != f {
		_ = old.Close()
	}
}

// Close writes the buffered lines, stops the flushing and closes the file.
// Events logged afterwards are lost (and counted as write errors).
func (ml *MessageLog) Close() {
	ml.closeOnce.Do(func() {
		ml.gate.mu.Lock()
		ml.gate.closed = true
		ml.gate.mu.Unlock()
		_ = ml.bws.Stop()
		if old := ml.out.swap(nil, ml.Path()); old != nil {
			_ = old.Sync()
			_ = old.Close()
		}
	})
}

// logFile is the file under the buffer. Its Write never returns an error:
// a failed write is counted and reported, its lines are dropped, and the
// next write tries again (bufio.Writer, inside the buffer, would otherwise
// keep the first error and refuse every later write until a reopen).
type logFile struct {
	mu   sync.Mutex
	f    *os.File // nil once closed
	path string
	// cut: the last write ended inside a line; the next write starts a
	// new one, so that later lines stay whole JSON.
	cut bool

	log        *zap.Logger // main: write errors
	reported   time.Time
	unreported int
}

var errLogClosed = errors.New("the message log is closed")

func (lf *logFile) Write(p []byte) (int, error) {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.f == nil {
		lf.failed(errLogClosed)
		return len(p), nil
	}
	if lf.cut {
		if _, err := lf.f.Write([]byte{'\n'}); err != nil {
			lf.failed(err)
			return len(p), nil
		}
		lf.cut = false
	}
	n, err := lf.f.Write(p)
	if err != nil {
		lf.cut = n > 0 && p[n-1] != '\n'
		lf.failed(err)
	}
	return len(p), nil
}

// Sync does not fsync (see the message log's doc): the flush every second
// hands the lines to the kernel, which is what a process crash needs.
func (lf *logFile) Sync() error { return nil }

// failed counts a failed write and reports it on the main log, at most
// once per msgLogReportEvery; lf.mu is held.
func (lf *logFile) failed(err error) {
	metricMessageLogErrors.Inc()
	lf.unreported++
	if now := time.Now(); now.Sub(lf.reported) >= msgLogReportEvery {
		lf.log.Error("message log write failed; its lines are lost (the messages are not affected)",
			zap.String("path", lf.path), zap.Int("errors", lf.unreported), zap.Error(err))
		lf.reported, lf.unreported = now, 0
	}
}

// swap puts f (opened at path) in place of the current file and returns
// the current one.
func (lf *logFile) swap(f *os.File, path string) *os.File {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	old := lf.f
	lf.f, lf.path, lf.cut = f, path, false
	return old
}

// msgLogCtl is the dispatcher's message log: the pointer every event loads
// (nil: off), and its changes by reloads and shutdown.
type msgLogCtl struct {
	cur atomic.Pointer[MessageLog]

	mu       sync.Mutex // opening, reopening, closing
	retiring []*MessageLog
}

// mlog is the message log, nil when it is off: the one atomic load an
// event costs when it is off.
func (d *Dispatcher) mlog() *MessageLog { return d.msgLog.cur.Load() }

// MessageLog returns the open message log, nil when it is off.
func (d *Dispatcher) MessageLog() *MessageLog { return d.mlog() }

// pendingLog is a message log file opened by a reload before it applies.
type pendingLog struct {
	path string
	f    *os.File // nil: the log is off
}

// prepareMessageLog opens the file of log.messages path ("" = off) for a
// start or a reload; applyMessageLog then puts it in use. The error names
// the key.
func prepareMessageLog(path string) (*pendingLog, error) {
	p := &pendingLog{path: path}
	if path == "" {
		return p, nil
	}
	f, err := openLogFile(path)
	if err != nil {
		return nil, fmt.Errorf("log.messages: %w", err)
	}
	p.f = f
	return p, nil
}

// openMessageLog opens the message log at start ("" = off).
func (d *Dispatcher) openMessageLog(path string) error {
	p, err := prepareMessageLog(path)
	if err != nil {
		return err
	}
	d.applyMessageLog(p)
	return nil
}

// applyMessageLog puts a prepared file in use: the log is turned on, moved
// to the new file (the buffered lines are written to the old one first,
// then it is closed: a reload after logrotate moved the file goes on in a
// new file at the configured path), or turned off.
func (d *Dispatcher) applyMessageLog(p *pendingLog) {
	ctl := &d.msgLog
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	cur := ctl.cur.Load()
	switch {
	case p.f == nil && cur == nil:
	case p.f == nil:
		ctl.cur.Store(nil)
		// Events that loaded it just before still write: it is closed a
		// moment later (or at shutdown), with its lines written now.
		_ = cur.Sync()
		ctl.retiring = append(ctl.retiring, cur)
		time.AfterFunc(msgLogRetireAfter, func() {
			cur.Close()
			ctl.mu.Lock()
			ctl.retiring = slices.DeleteFunc(ctl.retiring, func(ml *MessageLog) bool { return ml == cur })
			ctl.mu.Unlock()
		})
	case cur == nil:
		ctl.cur.Store(newMessageLog(p.f, p.path, d.log))
	default:
		cur.reopen(p.f, p.path)
	}
	if p.f != nil && cur == nil {
		d.log.Info("message log opened", zap.String("path", p.path))
	}
}

// ReopenMessageLog closes and reopens the message log's file at the path
// it has (a reload whose file was refused still lets logrotate move the
// log). A file that cannot be opened leaves the log in the one it has.
func (d *Dispatcher) ReopenMessageLog() {
	ctl := &d.msgLog
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	cur := ctl.cur.Load()
	if cur == nil {
		return
	}
	path := cur.Path()
	f, err := openLogFile(path)
	if err != nil {
		d.log.Error("message log cannot be reopened; it goes on in the file it has", zap.String("path", path), zap.Error(err))
		return
	}
	cur.reopen(f, path)
}

// closeMessageLog closes the message log (shutdown), writing what is
// buffered.
func (d *Dispatcher) closeMessageLog() {
	ctl := &d.msgLog
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if cur := ctl.cur.Swap(nil); cur != nil {
		cur.Close()
	}
	for _, ml := range ctl.retiring {
		ml.Close()
	}
	ctl.retiring = nil
}

// ReopenMessageLog reopens the message log at its path (SIGHUP with a
// config that was refused: logrotate's postrotate still gets a new file).
func (g *Gateway) ReopenMessageLog() { g.Disp.ReopenMessageLog() }

// statusWord is an SMPP command_status as its name (ESME_ROK), or as hex
// when it has none.
func statusWord(status uint32) string {
	if n, ok := statusNames[status]; ok {
		return n
	}
	if n := data.CommandStatusType(status).String(); strings.HasPrefix(n, "ESME_") {
		return n
	}
	return fmt.Sprintf("0x%08X", status)
}

// idFields are the "id" (as the platform knows the message) and, for a
// destination of a submit_multi, its "part" id.
func idFields(id string) []zap.Field {
	pid := platformID(id)
	if pid == id {
		return []zap.Field{zap.String("id", id)}
	}
	return []zap.Field{zap.String("id", pid), zap.String("part", id)}
}

// routedTo is the carrier a message was routed to, "modem" for a number
// routed to the modem pool ("" when there was no modem pool either).
func routedTo(m *store.Message, path string) string {
	if m.Carrier == "" && path == pathModem {
		return "modem"
	}
	return m.Carrier
}

// submitted logs a platform's submit answered (event submit). res.msg is
// the message when one was made; dest, when it was not, is the destination
// as the platform sent it (masked here; "" if unknown). part and dests are
// a submit_multi destination's id and the number of destinations.
func (ml *MessageLog) submitted(account string, res SubmitOutcome, dest, part string, dests int) {
	fs := make([]zap.Field, 0, 11)
	fs = append(fs, zap.String("id", res.ID))
	if part != "" {
		fs = append(fs, zap.String("part", part))
	}
	fs = append(fs, zap.String("account", account), zap.String("status", statusWord(res.Status)))
	if m := res.msg; m != nil {
		fs = append(fs, zap.String("to", maskNumber(m.Dest)), zap.String("from", maskSource(m.Source)),
			zap.String("carrier", routedTo(m, res.Path)))
		if m.CarrierID != "" { // also when the carrier took it and the store did not: its id is what to ask it about
			fs = append(fs, zap.String("carrier_id", m.CarrierID))
		}
	} else if dest != "" {
		fs = append(fs, zap.String("to", maskNumber(dest)))
	}
	if res.Path != "" {
		fs = append(fs, zap.String("path", res.Path))
	}
	if dests > 0 {
		fs = append(fs, zap.Int("dests", dests))
	}
	ml.zl.Info("submit", fs...)
}

// refused logs a submit refused before any message was made (event
// submit, id "").
func (ml *MessageLog) refused(account string, status uint32) {
	ml.zl.Info("submit", zap.String("id", ""), zap.String("account", account), zap.String("status", statusWord(status)),
		zap.String("path", pathError))
}

// failover logs a message moved to the modem queue (event failover);
// reason is the word of spareline_failovers_total (down, timeout, lost,
// transient, receipt) or route (no carrier for the number).
func (ml *MessageLog) failover(m *store.Message, reason string, extra ...zap.Field) {
	fs := append(idFields(m.ID), zap.String("account", m.Account), zap.String("carrier", m.Carrier),
		zap.String("reason", reason), zap.String("to", maskNumber(m.Dest)))
	ml.zl.Info("failover", append(fs, extra...)...)
}

// modemSent logs a modem send that succeeded (event modem_sent).
func (ml *MessageLog) modemSent(m *store.Message, modemName string, parts int) {
	ml.zl.Info("modem_sent", append(idFields(m.ID), zap.String("account", m.Account), zap.String("modem", modemName),
		zap.Int("attempts", m.Attempts), zap.Int("parts", parts))...)
}

// modemFailed logs a modem send that failed (event modem_failed); final
// when it is not retried.
func (ml *MessageLog) modemFailed(m *store.Message, modemName string, err error, final bool) {
	ml.zl.Info("modem_failed", append(idFields(m.ID), zap.String("account", m.Account), zap.String("modem", modemName),
		zap.Int("attempts", m.Attempts), zap.String("error", err.Error()), zap.Bool("final", final))...)
}

// returned logs a queued message taken back by its recovered carrier
// (event returned).
func (ml *MessageLog) returned(m *store.Message) {
	ml.zl.Info("returned", append(idFields(m.ID), zap.String("account", m.Account), zap.String("carrier", m.Carrier),
		zap.String("carrier_id", m.CarrierID))...)
}

// receipt logs a carrier's receipt matched to m (event receipt).
func (ml *MessageLog) receipt(m *store.Message, carrier, stat string, final bool) {
	ml.zl.Info("receipt", append(idFields(m.ID), zap.String("account", m.Account), zap.String("carrier", carrier),
		zap.String("carrier_id", m.CarrierID), zap.String("stat", stat), zap.Bool("final", final))...)
}

// ownReceipt logs an outcome spareline itself gave m (event receipt): the
// modem path's (source "modem": a status report, the receipt timer, an
// expiry or a refusal), or a cancel_sm its carrier (source) confirmed.
func (ml *MessageLog) ownReceipt(m *store.Message, source, stat, note string) {
	fs := append(idFields(m.ID), zap.String("account", m.Account), zap.String("carrier", source))
	if source == "modem" {
		fs = append(fs, zap.String("modem", m.Modem))
	}
	ml.zl.Info("receipt", append(fs, zap.String("stat", stat), zap.Bool("final", true), zap.String("note", note))...)
}

// delivered logs the platform's answer to the deliver_sm of del (event
// receipt_delivered, or mo_delivered for an MO message). nack: it answered
// generic_nack.
func (ml *MessageLog) delivered(del *store.Delivery, status uint32, nack bool) {
	fs := make([]zap.Field, 0, 6)
	event := "mo_delivered"
	if del.MsgID != "" {
		event = "receipt_delivered"
		fs = append(fs, idFields(del.MsgID)...)
	} else {
		if sm, err := ParseShortMessage(del.Body); err == nil && sm.IsReceipt() {
			event = "receipt_delivered" // one that matched no message (unmatched.go)
		}
		fs = append(fs, zap.String("id", ""))
	}
	fs = append(fs, zap.String("account", del.Account), zap.String("delivery", del.ID), zap.String("status", statusWord(status)))
	if nack {
		fs = append(fs, zap.Bool("generic_nack", true))
	}
	ml.zl.Info(event, fs...)
}

// unmatched logs a carrier's receipt that matched no message, given to
// the platform as the carrier sent it (event unmatched_receipt).
func (ml *MessageLog) unmatched(del *store.Delivery, carrier, carrierID, stat string) {
	ml.zl.Info("unmatched_receipt", zap.String("id", ""), zap.String("account", del.Account), zap.String("delivery", del.ID),
		zap.String("carrier", carrier), zap.String("carrier_id", carrierID), zap.String("stat", stat))
}

// mo logs an MO message stored for the platform (event mo). via is the
// carrier's name, or "modem".
func (ml *MessageLog) mo(del *store.Delivery, from, to, via, modemName string) {
	fs := []zap.Field{zap.String("id", ""), zap.String("account", del.Account), zap.String("delivery", del.ID),
		zap.String("from", maskNumber(from)), zap.String("to", maskSource(to)), zap.String("carrier", via)}
	if modemName != "" {
		fs = append(fs, zap.String("modem", modemName))
	}
	ml.zl.Info("mo", fs...)
}

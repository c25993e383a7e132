package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// The embedded store's write-ahead log of links (LinkCarrier and
// TryLinkCarrier), dir/spareline.wal. See bolt_wal.go for how the store
// uses it; this file is the format and the file.
//
// The file is preallocated (written with zeros, fsynced, its directory
// fsynced) to walFileSize, so that appending a batch never changes its size
// and one fdatasync makes the batch durable. Records follow each other from
// offset 0:
//
//	off 0   u32 LE  n, the length of the payload (0: no record here)
//	off 4   u32 LE  CRC-32C (Castagnoli) of octets [0, 4) and [8, 16+n)
//	off 8   u64 LE  seq, the record's sequence number
//	off 16  payload, n octets:
//	          flags(1)          bit 0: the link took the orphan stashed for its key
//	          exp u64 BE        the record's expiry, unix ms (0 = never)
//	          uvarint len, id   our message id
//	          uvarint len, key  the carrier id key (boltCarrierKey)
//	          enc               the encoded Message (codec.go), to the end
//
// The log is the chain of records read from offset 0 while each record is
// whole (its CRC matches) and its seq is one more than the previous one's.
// The first record that is not (zeros, a torn write, a record of an older
// pass over the file) ends it. Sequence numbers grow for the life of the
// store (bbolt's meta bucket keeps the last one applied), and a new pass
// over the file starts at offset 0 only once every record of the file is
// applied, so an older pass's records, left after the new pass's end, have
// smaller numbers and never continue the chain.
const (
	walHeader = 16
	walName   = "spareline.wal"
)

// walFileSize is the log file's size: the most link records' octets
// waiting to be applied to bbolt (a variable for the tests).
var walFileSize int64 = 2 << 20

var walCRC = crc32.MakeTable(crc32.Castagnoli)

// walRecord is one record of the log. Its slices point into the octets it
// was parsed from.
type walRecord struct {
	seq  uint64
	took bool // the link took the orphan stashed for key
	exp  uint64
	id   []byte
	key  []byte
	enc  []byte
}

// appendWALRecord appends the framed record to b.
func appendWALRecord(b []byte, seq uint64, took bool, exp uint64, id string, key, enc []byte) []byte {
	start := len(b)
	b = append(b, make([]byte, walHeader)...)
	flags := byte(0)
	if took {
		flags = 1
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, exp)
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = append(b, enc...)
	h := b[start:]
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(h)-walHeader))
	binary.LittleEndian.PutUint64(h[8:16], seq)
	binary.LittleEndian.PutUint32(h[4:8], walSum(h))
	return b
}

// walSum is the CRC of the framed record h: its length and what follows
// the CRC.
func walSum(h []byte) uint32 {
	return crc32.Update(crc32.Checksum(h[0:4], walCRC), walCRC, h[8:])
}

// parseWALRecord reads the record at the start of b: the record and its
// framed size, or ok false when there is none (zeros, a short or torn
// record, a CRC that does not match, a payload that does not parse).
func parseWALRecord(b []byte) (r walRecord, size int, ok bool) {
	if len(b) < walHeader {
		return r, 0, false
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n == 0 || uint64(n) > uint64(len(b)-walHeader) {
		return r, 0, false
	}
	size = walHeader + int(n)
	if walSum(b[:size]) != binary.LittleEndian.Uint32(b[4:8]) {
		return r, 0, false
	}
	r.seq = binary.LittleEndian.Uint64(b[8:16])
	p := b[walHeader:size]
	if len(p) < 9 || p[0]&^1 != 0 {
		return r, 0, false
	}
	r.took = p[0] == 1
	r.exp = binary.BigEndian.Uint64(p[1:9])
	p = p[9:]
	// An empty id or key parses (the CRC says the record is whole): the
	// replay steps over a record that bbolt would refuse (checkLink)
	// instead of ending the chain there, which would lose the records
	// after it.
	var field = func() ([]byte, bool) {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > uint64(len(p)-k) {
			return nil, false
		}
		f := p[k : k+int(l)]
		p = p[k+int(l):]
		return f, true
	}
	var ok1, ok2 bool
	if r.id, ok1 = field(); !ok1 {
		return walRecord{}, 0, false
	}
	if r.key, ok2 = field(); !ok2 {
		return walRecord{}, 0, false
	}
	r.enc = p
	return r, size, true
}

// scanWAL returns the log held in data (see the top of this file) and the
// octets it takes.
func scanWAL(data []byte) (recs []walRecord, end int) {
	for {
		r, n, ok := parseWALRecord(data[end:])
		if !ok || (len(recs) > 0 && r.seq != recs[len(recs)-1].seq+1) {
			return recs, end
		}
		recs = append(recs, r)
		end += n
	}
}

// walFile is the open log file.
type walFile struct {
	f    *os.File
	size int64 // preallocated: no write goes past it
	path string
}

// openWALFile opens (creating it if needed) dir's log and returns it with
// its contents. It does not change the file: the replay reads the halves
// as the file was written (len(data)/2), and only once the replay has
// committed (walseq past every record in the file) does enlarge make it
// walFileSize long. Enlarged before, a replay that then did not commit
// (a crash, an error) would leave the next open reading halves at the new
// size, never scanning the old second half.
func openWALFile(dir string) (*walFile, []byte, error) {
	path := filepath.Join(dir, walName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	fail := func(err error) (*walFile, []byte, error) {
		_ = f.Close()
		return nil, nil, fmt.Errorf("store: %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return fail(err)
	}
	return &walFile{f: f, size: fi.Size(), path: path}, data, nil
}

// enlarge preallocates the log file to walFileSize (it never shrinks),
// once the replay has committed: every record in it is then applied.
func (w *walFile) enlarge() error {
	size := max(w.size, walFileSize)
	if w.size < size {
		// Zeros, written (not a hole or fallocate's unwritten extents), so
		// that a write into them changes no metadata that fdatasync would
		// have to write.
		if _, err := w.f.WriteAt(make([]byte, size-w.size), w.size); err != nil {
			return fmt.Errorf("store: %s: %w", w.path, err)
		}
	}
	// Always, not only after growing it: a file left at full size by a
	// run that died before its Sync, and its directory entry, are made
	// durable here, before any record is answered from it.
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("store: %s: %w", w.path, err)
	}
	if err := syncDir(filepath.Dir(w.path)); err != nil {
		return fmt.Errorf("store: %s: %w", w.path, err)
	}
	w.size = size
	return nil
}

// unwrite overwrites a failed write's bytes with zeros and syncs, best
// effort: the bytes of a write whose fdatasync failed may sit in the page
// cache, and a process started after a kill -9 would read them as records
// and replay links whose callers were told they failed (deleting an orphan
// nobody received). Zeros end the chain there.
func (w *walFile) unwrite(n int, off int64) error {
	if off+int64(n) > w.size {
		n = int(w.size - off)
	}
	if n <= 0 {
		return nil
	}
	if _, err := w.f.WriteAt(make([]byte, n), off); err != nil {
		return err
	}
	return walSync(w.f)
}

// syncDir fsyncs a directory, making a file created in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// walSync makes the log's writes durable (a variable for the tests that
// inject a failing fdatasync).
var walSync = fdatasync

// errWALFull: a batch does not fit in what is left of the log file.
var errWALFull = errors.New("store: wal full")

// write writes b at off and makes it durable.
func (w *walFile) write(b []byte, off int64) error {
	if off+int64(len(b)) > w.size {
		return errWALFull
	}
	if _, err := w.f.WriteAt(b, off); err != nil {
		return err
	}
	return walSync(w.f)
}

func (w *walFile) close() error { return w.f.Close() }

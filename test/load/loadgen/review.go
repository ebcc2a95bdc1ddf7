package loadgen

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
)

// Error kinds: what went wrong with one request. A successful request has
// kind "". Statuses other than 200 are reported as "http_<code>".
const (
	// KindConnect: the request never reached a server (dial or TLS
	// handshake failed, e.g. connection refused after the listener closed).
	// Such a request is always safe to retry elsewhere.
	KindConnect = "connect"
	// KindUnanswered: the request was (perhaps partly) written on a
	// connection that closed before any byte of an answer arrived. The
	// server may or may not have read it.
	KindUnanswered = "unanswered"
	// KindTransport: the answer was cut off, or another transport failure.
	KindTransport = "transport"
	// KindTimeout: no complete answer within the request timeout.
	KindTimeout = "timeout"
	// KindDecode: the body is not an AdmissionReview with a response.
	KindDecode = "decode"
	// KindUID: response.uid is not the request's uid.
	KindUID = "uid"
	// KindDenied: response.allowed is false.
	KindDenied = "denied"
	// KindPatch: a patch was expected and is missing, or a patch does not
	// apply to the request's object.
	KindPatch = "patch"
)

// uidMarker stands for the uid in a template; it has the length of a UUID.
const uidMarker = "loadgen0-uid0-mark-er00-000000000000"

// Review is an AdmissionReview template. Every request made from it gets a
// fresh uid, so that a response can be matched to its request.
type Review struct {
	prefix, suffix []byte
	object         []byte // request.object, what patches are applied to

	// applied holds patches already applied to object without error. The
	// object is the same in every request (only the uid differs), so a
	// patch that applied once applies again: remembering it keeps the
	// client's CPU, which shares the machine with the server, for sending.
	applied    sync.Map // string(patch) -> struct{}
	appliedLen atomic.Int64
}

// maxApplied bounds the remembered patches; past it every patch is applied.
const maxApplied = 1024

// NewReview parses an AdmissionReview to use as a template.
func NewReview(body []byte) (*Review, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("decoding AdmissionReview template: %w", err)
	}
	if review.Request == nil {
		return nil, errors.New("AdmissionReview template has no request")
	}
	review.Request.UID = uidMarker
	out, err := json.Marshal(&review)
	if err != nil {
		return nil, fmt.Errorf("encoding AdmissionReview template: %w", err)
	}
	i := bytes.Index(out, []byte(uidMarker))
	if i < 0 || bytes.Count(out, []byte(uidMarker)) != 1 {
		return nil, errors.New("AdmissionReview template: cannot place the uid")
	}
	return &Review{
		prefix: out[:i:i],
		suffix: out[i+len(uidMarker):],
		object: review.Request.Object.Raw,
	}, nil
}

// Body returns the review with request.uid set to uid, a fresh slice.
func (r *Review) Body(uid string) []byte {
	b := make([]byte, 0, len(r.prefix)+len(uid)+len(r.suffix))
	b = append(b, r.prefix...)
	b = append(b, uid...)
	return append(b, r.suffix...)
}

// Check validates the body of a 200 answer to the request with uid: an
// AdmissionReview whose response has that uid and allows the object, and
// whose patch, if any, is a JSON patch that applies to the object. With
// expectPatch a missing patch is an error too. It returns the error kind
// and a description, or "" and nil.
func (r *Review) Check(uid string, body []byte, expectPatch bool) (string, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return KindDecode, fmt.Errorf("decoding answer: %w", err)
	}
	if review.Kind != "AdmissionReview" || review.Response == nil {
		return KindDecode, fmt.Errorf("answer is not an AdmissionReview with a response: kind %q", review.Kind)
	}
	resp := review.Response
	if string(resp.UID) != uid {
		return KindUID, fmt.Errorf("response.uid %q, want %q", resp.UID, uid)
	}
	if !resp.Allowed {
		msg := ""
		if resp.Result != nil {
			msg = resp.Result.Message
		}
		return KindDenied, fmt.Errorf("denied: %s", msg)
	}
	if len(resp.Patch) == 0 {
		if expectPatch {
			return KindPatch, errors.New("no patch")
		}
		return "", nil
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		return KindPatch, fmt.Errorf("patchType %v, want JSONPatch", resp.PatchType)
	}
	if _, ok := r.applied.Load(string(resp.Patch)); ok {
		return "", nil
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		return KindPatch, fmt.Errorf("decoding patch: %w", err)
	}
	if _, err := patch.Apply(r.object); err != nil {
		return KindPatch, fmt.Errorf("applying patch: %w", err)
	}
	if r.appliedLen.Load() < maxApplied {
		if _, loaded := r.applied.LoadOrStore(string(resp.Patch), struct{}{}); !loaded {
			r.appliedLen.Add(1)
		}
	}
	return "", nil
}

// uids makes unique UUID-shaped ids: 8 random bytes per run, then a counter.
type uids struct {
	prefix [8]byte
	n      atomic.Uint64
}

func newUIDs() (*uids, error) {
	u := &uids{}
	if _, err := rand.Read(u.prefix[:]); err != nil {
		return nil, fmt.Errorf("seeding uids: %w", err)
	}
	return u, nil
}

func (u *uids) next() string {
	var raw [16]byte
	copy(raw[:8], u.prefix[:])
	n := u.n.Add(1)
	for i := 15; i >= 8; i-- {
		raw[i] = byte(n)
		n >>= 8
	}
	var s [36]byte
	hex.Encode(s[0:8], raw[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], raw[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], raw[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], raw[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], raw[10:16])
	return string(s[:])
}

package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	knwebhook "knative.dev/pkg/webhook"
)

// Review sizes. The API server's AdmissionReview is larger than the request
// it received: Go's encoder writes '<', '>', '&', control characters,
// U+2028/U+2029 and invalid UTF-8 as six-byte \uXXXX escapes, an UPDATE
// carries object and oldObject, and metadata.managedFields rides along. A
// webhook that refuses what the API server sends fails open under
// failurePolicy Ignore and blocks legitimate Pods under Fail, so every size
// the API server can send for an object it can store is processed.
const (
	// knativeMaxBody is what knative.dev/pkg's webhook reads at most (its
	// MaxBodySize, 3 MiB). Reviews up to it go through knative's handler;
	// larger ones are decoded here and given to the same controller.
	knativeMaxBody = 3 << 20

	// etcdMaxRequest is etcd's default --max-request-bytes (1.5 MiB): no
	// object larger than that is ever stored, so no UPDATE carries one.
	etcdMaxRequest = 3 << 19

	// jsonExpansion bounds how much larger an object's JSON in a review is
	// than its stored form: six for escaped characters, and up to about
	// seven for fields that cost two bytes in protobuf and their name in
	// JSON ("tty":true). Eight leaves room.
	jsonExpansion = 8

	// MaxReviewBytes is the largest review processed: object and
	// oldObject of the largest storable object, fully expanded, and 1 MiB
	// for the rest of the review. A larger body is no review of a storable
	// object; it is denied with a reason (and the request's uid, so that
	// the API server takes the answer), never failed open. Measured on the
	// real API server (test/e2e TestLargestReview): the largest Pod etcd
	// stores (an env value of 1,572,000 '<'), updated, is a review of
	// about 18.9 MB.
	MaxReviewBytes = 2*jsonExpansion*etcdMaxRequest + 1<<20
)

// admitDirect answers a review too large for knative's handler the way that
// handler does: decode the AdmissionReview, ask the controller, answer with
// the request's type meta and uid. It is the only place the webhook does
// knative's plumbing itself.
func admitDirect(w http.ResponseWriter, r *http.Request, c knwebhook.AdmissionController, body []byte) {
	var review admissionv1.AdmissionReview
	// body is not used past this point, so the collector may take it
	// while the controller works on the review's copies of the objects.
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "mutator: could not decode body: "+err.Error(), http.StatusBadRequest)
		return
	}
	resp := c.Admit(r.Context(), review.Request)
	// As knative does: a warning with newlines would be dropped whole.
	if resp.Warnings != nil {
		var warnings []string
		for _, w := range resp.Warnings {
			warnings = append(warnings, strings.Split(w, "\n")...)
		}
		resp.Warnings = warnings
	}
	resp.UID = review.Request.UID
	writeReview(w, review.TypeMeta, resp)
}

// deny answers a review the handler will not process with a denial the API
// server takes as the webhook's answer (HTTP 200, an AdmissionReview with
// the request's uid), so that neither failurePolicy lets it through: under
// Ignore an HTTP error would admit the object unmutated. Without a uid in
// prefix (no API server sends such a body) it answers an HTTP error.
func deny(w http.ResponseWriter, prefix []byte, code int32, reason metav1.StatusReason, message string) {
	tm, uid, err := reviewHeader(prefix)
	if err != nil {
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
		http.Error(w, message, int(code))
		return
	}
	writeReview(w, tm, &admissionv1.AdmissionResponse{UID: uid, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Reason: reason, Message: message,
	}})
}

func writeReview(w http.ResponseWriter, tm metav1.TypeMeta, resp *admissionv1.AdmissionResponse) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(admissionv1.AdmissionReview{TypeMeta: tm, Response: resp}); err != nil {
		http.Error(w, "mutator: could not encode response: "+err.Error(), http.StatusInternalServerError)
	}
}

// reviewHeader reads the type meta and the request's uid from the start of
// an AdmissionReview, which may be cut anywhere after them: the API server
// writes kind, apiVersion and then the request, uid first, so a few hundred
// bytes are enough.
func reviewHeader(prefix []byte) (metav1.TypeMeta, k8stypes.UID, error) {
	var tm metav1.TypeMeta
	dec := json.NewDecoder(bytes.NewReader(prefix))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return tm, "", errors.New("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return tm, "", err
		}
		switch tok {
		case "kind":
			err = dec.Decode(&tm.Kind)
		case "apiVersion":
			err = dec.Decode(&tm.APIVersion)
		case "request":
			uid, err := requestUID(dec)
			if err != nil {
				return tm, "", err
			}
			return tm, uid, nil
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return tm, "", err
		}
	}
	return tm, "", errors.New(`no "request" member`)
}

func requestUID(dec *json.Decoder) (k8stypes.UID, error) {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", errors.New(`"request" is not an object`)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		if tok == "uid" {
			var uid string
			if err := dec.Decode(&uid); err != nil {
				return "", err
			}
			if uid == "" {
				return "", errors.New("empty uid")
			}
			return k8stypes.UID(uid), nil
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", err
		}
	}
	return "", errors.New(`no "uid" in "request"`)
}

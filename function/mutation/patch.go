package mutation

import (
	"encoding/json"
	"fmt"

	"gomodules.xyz/jsonpatch/v2"
)

// Patch encodes the changes as an RFC 6902 JSON patch, or nil when there are
// none. The operations are built directly from the rules' results instead of
// diffing a re-encoded object (jsonpatch.CreatePatch), which would mean
// decoding and encoding the whole Pod twice per review.
func Patch(changes []Change) ([]byte, error) {
	if len(changes) == 0 {
		return nil, nil
	}
	ops := make([]jsonpatch.Operation, len(changes))
	for i, c := range changes {
		ops[i] = jsonpatch.NewOperation(c.op, c.Path, c.value)
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encoding JSON patch: %w", err)
	}
	return b, nil
}

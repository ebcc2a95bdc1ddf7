package copier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// plan is one copy's walk of the origin: everything it must write to the
// mirror, read (manifests only) and sized before anything is written.
type plan struct {
	c       *Copier
	ctx     context.Context
	src     name.Repository
	dst     name.Repository
	puller  *remote.Puller // the origin, with its credentials
	probe   *remote.Puller // the mirror, with its credentials: HEADs only
	blobs   map[v1.Hash]bool
	seen    map[v1.Hash]bool // manifests counted
	bytes   int64
	what    string // the source, for messages
	writes  []write
	refs    []Referrer
	visited map[v1.Hash]bool // subjects whose referrers were listed
}

// write is one manifest (with what it needs) to write to the mirror.
type write struct {
	ref name.Reference
	t   remote.Taggable
	// put writes the manifest alone: the mirror has its children.
	put bool
}

// copy copies src to dst, filling res.
func (c *Copier) copy(ctx context.Context, src, dst name.Reference, res *Result) error {
	var uploaded atomic.Int64
	puller, err := remote.NewPuller(c.options(ctx, c.opts.SourceKeychain, c.transport)...)
	if err != nil {
		return err
	}
	probe, err := remote.NewPuller(c.options(ctx, c.opts.TargetKeychain, c.transport)...)
	if err != nil {
		return err
	}
	pusher, err := remote.NewPusher(c.options(ctx, c.opts.TargetKeychain, counting{rt: c.transport, n: &uploaded})...)
	if err != nil {
		return err
	}
	defer func() { res.Uploaded = uploaded.Load() }()

	desc, err := puller.Get(ctx, src)
	if err != nil {
		if isStatus(err, http.StatusNotFound) {
			return fail(ReasonNotFound, "origin has no manifest for %s: %w", src, err)
		}
		return fmt.Errorf("reading %s from the origin: %w", src, err)
	}
	res.Digest, res.MediaType = desc.Digest.String(), string(desc.MediaType)
	if d, ok := dst.(name.Digest); ok && d.DigestStr() != desc.Digest.String() {
		return fail(ReasonMismatch, "target names digest %s but the origin's %s is %s", d.DigestStr(), src, desc.Digest)
	}

	p := &plan{
		c: c, ctx: ctx, src: src.Context(), dst: dst.Context(), puller: puller, probe: probe,
		blobs: map[v1.Hash]bool{}, seen: map[v1.Hash]bool{}, visited: map[v1.Hash]bool{}, what: src.String(),
	}
	subjects, err := p.planImage(desc, dst)
	if err == nil {
		err = p.planReferrers(subjects)
	}
	// Also when refused: how far the plan got.
	res.Manifests, res.Bytes, res.Referrers = len(p.seen), p.bytes, p.refs
	if err != nil {
		return err
	}

	// Everything is sized: write. The image first (its children before
	// it), then each referrer after its subject, one at a time, so that a
	// mirror without the referrers API gets its fallback tag updated
	// without lost updates.
	for _, w := range p.writes {
		if w.put {
			err = pusher.Put(ctx, w.ref, w.t)
		} else {
			err = pusher.Push(ctx, w.ref, w.t)
		}
		if err != nil {
			return fmt.Errorf("writing %s to the mirror: %w", w.ref, err)
		}
	}

	got, err := probe.Head(ctx, dst)
	if err != nil {
		return fmt.Errorf("checking %s on the mirror after the copy: %w", dst, err)
	}
	if got.Digest != desc.Digest {
		return fail(ReasonMismatch, "the mirror serves %s at %s after the copy, the origin %s", dst, got.Digest, desc.Digest)
	}
	return nil
}

// planImage plans the image: nothing when the mirror serves dst at the
// origin's digest, the tag alone when it has the digest, the whole image
// otherwise. It returns the digests whose referrers are copied too: the
// image's and its platform manifests'.
func (p *plan) planImage(desc *remote.Descriptor, dst name.Reference) ([]v1.Hash, error) {
	subjects := []v1.Hash{desc.Digest}
	if desc.MediaType.IsIndex() {
		im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, fmt.Errorf("parsing the index of %s: %w", p.what, err)
		}
		for _, m := range im.Manifests {
			if m.MediaType.IsImage() || m.MediaType.IsIndex() {
				subjects = append(subjects, m.Digest)
			}
		}
		// Each is asked for its referrers, even when the mirror has the
		// image: bound that too.
		if len(subjects) > p.c.opts.MaxManifests {
			return nil, fail(ReasonTooLarge, "copy refused: %s has more than %d manifests (COPY_MAX_MANIFESTS); nothing was transferred",
				p.what, p.c.opts.MaxManifests)
		}
	}

	if got, err := p.head(dst); err != nil {
		return nil, err
	} else if got != nil && got.Digest == desc.Digest {
		return subjects, p.count(desc.Digest, 0)
	}
	if _, ok := dst.(name.Tag); ok {
		got, err := p.head(p.dst.Digest(desc.Digest.String()))
		if err != nil {
			return nil, err
		}
		if got != nil {
			// The mirror has the image under another tag or by digest
			// only: write the tag.
			if err := p.count(desc.Digest, int64(len(desc.Manifest))); err != nil {
				return nil, err
			}
			p.writes = append(p.writes, write{ref: dst, t: desc, put: true})
			return subjects, nil
		}
	}
	t, err := p.walk(desc, 0)
	if err != nil {
		return nil, err
	}
	p.writes = append(p.writes, write{ref: dst, t: t})
	return subjects, nil
}

// planReferrers plans the referrers of the subjects, and theirs in turn:
// OCI referrers (the referrers API or its fallback tag, which ggcr reads and
// writes as each registry supports) and cosign's tags for the subjects
// themselves.
func (p *plan) planReferrers(subjects []v1.Hash) error {
	for depth := 0; len(subjects) > 0 && depth < maxDepth; depth++ {
		var next []v1.Hash
		for _, s := range subjects {
			if p.visited[s] {
				continue
			}
			p.visited[s] = true
			found, err := p.referrers(s)
			if err != nil {
				return err
			}
			next = append(next, found...)
			if depth == 0 {
				if err := p.cosignTags(s); err != nil {
					return err
				}
			}
		}
		subjects = next
	}
	return nil
}

// referrers plans the OCI referrers of subject and returns their digests.
func (p *plan) referrers(subject v1.Hash) ([]v1.Hash, error) {
	idx, err := remote.Referrers(p.src.Digest(subject.String()), remote.Reuse(p.puller), remote.WithContext(p.ctx))
	if err != nil {
		return nil, fmt.Errorf("listing the referrers of %s@%s on the origin: %w", p.src, subject, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("listing the referrers of %s@%s on the origin: %w", p.src, subject, err)
	}
	var found []v1.Hash
	for _, d := range im.Manifests {
		if p.seen[d.Digest] {
			continue
		}
		ref := Referrer{Digest: d.Digest.String(), MediaType: string(d.MediaType), ArtifactType: d.ArtifactType, Subject: subject.String()}
		if err := p.planManifest(p.src.Digest(d.Digest.String()), p.dst.Digest(d.Digest.String()), d); err != nil {
			return nil, err
		}
		p.refs = append(p.refs, ref)
		found = append(found, d.Digest)
	}
	return found, nil
}

// cosignTags plans the manifests cosign attaches to subject by tag.
func (p *plan) cosignTags(subject v1.Hash) error {
	base := subject.Algorithm + "-" + subject.Hex
	for _, suffix := range cosignSuffixes {
		tag := base + suffix
		d, err := p.puller.Head(p.ctx, p.src.Tag(tag))
		if isStatus(err, http.StatusNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("looking for %s:%s on the origin: %w", p.src, tag, err)
		}
		if p.seen[d.Digest] {
			continue
		}
		p.refs = append(p.refs, Referrer{Digest: d.Digest.String(), MediaType: string(d.MediaType), Subject: subject.String(), Tag: tag})
		if err := p.planManifest(p.src.Tag(tag), p.dst.Tag(tag), *d); err != nil {
			return err
		}
	}
	return nil
}

// planManifest plans one referrer manifest, which the origin lists as d:
// nothing if the mirror serves dst at its digest already, else the
// manifest and what it needs.
func (p *plan) planManifest(src, dst name.Reference, d v1.Descriptor) error {
	if d.Size > maxManifestSize {
		return fail(ReasonTooLarge, "manifest %s declares %d bytes, more than a registry serves (%d)", src, d.Size, maxManifestSize)
	}
	if got, err := p.head(dst); err != nil {
		return err
	} else if got != nil && got.Digest == d.Digest {
		return p.count(d.Digest, 0)
	}
	desc, err := p.puller.Get(p.ctx, src)
	if err != nil {
		return fmt.Errorf("reading %s from the origin: %w", src, err)
	}
	t, err := p.walk(desc, 0)
	if err != nil {
		return err
	}
	p.writes = append(p.writes, write{ref: dst, t: t})
	return nil
}

// maxManifestSize is the largest manifest go-containerregistry reads.
const maxManifestSize = 100 << 20

// walk reads what a manifest needs from the origin, sizing it, and returns
// what the pusher writes: for an index, the index with its children as
// walked (so that they are not fetched again), children the mirror has
// already standing in by their descriptor.
func (p *plan) walk(desc *remote.Descriptor, depth int) (remote.Taggable, error) {
	if err := p.count(desc.Digest, int64(len(desc.Manifest))); err != nil {
		return nil, err
	}
	switch mt := desc.MediaType; {
	case mt.IsSchema1():
		return nil, fail(ReasonInvalid, "%s is a Docker schema 1 manifest, which cannot be copied with its digest", p.what)
	case mt.IsImage():
		img, err := desc.Image()
		if err != nil {
			return nil, err
		}
		return img, p.image(img)
	case mt.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, err
		}
		return p.index(idx, depth)
	}
	return nil, fail(ReasonInvalid, "%s has manifest media type %q, neither an image nor an index", p.what, desc.MediaType)
}

// index walks an index's children.
func (p *plan) index(idx v1.ImageIndex, depth int) (v1.ImageIndex, error) {
	if depth >= maxDepth {
		return nil, fail(ReasonInvalid, "%s nests indexes deeper than %d", p.what, maxDepth)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	out := &index{originIndex: idx}
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsImage() || d.MediaType.IsIndex():
			got, err := p.head(p.dst.Digest(d.Digest.String()))
			if err != nil {
				return nil, err
			}
			if got != nil && got.Digest == d.Digest {
				if err := p.count(d.Digest, 0); err != nil {
					return nil, err
				}
				out.children = append(out.children, presentChild(d))
				continue
			}
			if err := p.count(d.Digest, d.Size); err != nil {
				return nil, err
			}
			if d.MediaType.IsImage() {
				img, err := idx.Image(d.Digest)
				if err != nil {
					return nil, err
				}
				if err := p.image(img); err != nil {
					return nil, err
				}
				out.children = append(out.children, img)
				continue
			}
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			walked, err := p.index(child, depth+1)
			if err != nil {
				return nil, err
			}
			out.children = append(out.children, walked)
		default:
			// A blob listed in an index (go-containerregistry #819).
			l, err := p.puller.Layer(p.ctx, p.src.Digest(d.Digest.String()))
			if err != nil {
				return nil, err
			}
			if err := p.blob(d); err != nil {
				return nil, err
			}
			out.children = append(out.children, l)
		}
	}
	return out, nil
}

// image sizes an image's config and distributable layers (the pusher skips
// foreign layers, as registries do).
func (p *plan) image(img v1.Image) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	if err := p.blob(m.Config); err != nil {
		return err
	}
	for _, l := range m.Layers {
		if !l.MediaType.IsDistributable() {
			continue
		}
		if err := p.blob(l); err != nil {
			return err
		}
	}
	return nil
}

// count records a manifest of size bytes, once; it fails past MaxManifests.
func (p *plan) count(h v1.Hash, size int64) error {
	if p.seen[h] {
		return nil
	}
	p.seen[h] = true
	if len(p.seen) > p.c.opts.MaxManifests {
		return fail(ReasonTooLarge, "copy refused: %s has more than %d manifests with its referrers (COPY_MAX_MANIFESTS); nothing was transferred",
			p.what, p.c.opts.MaxManifests)
	}
	return p.add(size)
}

// blob records a blob, once.
func (p *plan) blob(d v1.Descriptor) error {
	if p.blobs[d.Digest] {
		return nil
	}
	p.blobs[d.Digest] = true
	return p.add(d.Size)
}

func (p *plan) add(n int64) error {
	if n < 0 {
		return fail(ReasonInvalid, "%s declares a negative size", p.what)
	}
	p.bytes += n
	if p.bytes > p.c.opts.MaxBytes {
		return fail(ReasonTooLarge, "copy refused: %s with its referrers needs at least %d bytes, more than the %d allowed (COPY_MAX_BYTES); nothing was transferred",
			p.what, p.bytes, p.c.opts.MaxBytes)
	}
	return nil
}

// head asks the mirror for ref's descriptor; nil when it has none.
func (p *plan) head(ref name.Reference) (*v1.Descriptor, error) {
	d, err := p.probe.Head(p.ctx, ref)
	if isStatus(err, http.StatusNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking for %s on the mirror: %w", ref, err)
	}
	return d, nil
}

func isStatus(err error, code int) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == code
}

// index is an origin index whose children were walked: the pusher writes
// these (partial.Manifests prefers Manifests) rather than fetching each
// child manifest from the origin again.
type index struct {
	originIndex
	children []partial.Describable
}

// originIndex names the embedded index (a field named ImageIndex would hide
// the method).
type originIndex = v1.ImageIndex

func (i *index) Manifests() ([]partial.Describable, error) { return i.children, nil }

// presentChild stands for a child manifest the mirror has: the pusher
// finds it there by digest and writes nothing, so its descriptor is all it
// needs. Should the mirror lose it meanwhile, the pusher's next call fails
// the copy (retried later) rather than writing an index without it.
func presentChild(d v1.Descriptor) partial.Describable {
	if d.MediaType.IsIndex() {
		return presentIndex{present{d}}
	}
	return presentImage{present{d}}
}

type present struct{ d v1.Descriptor }

var errVanished = errors.New("a manifest the mirror had at the start of the copy is gone")

func (p present) Digest() (v1.Hash, error)            { return p.d.Digest, nil }
func (p present) MediaType() (types.MediaType, error) { return p.d.MediaType, nil }
func (p present) Size() (int64, error)                { return p.d.Size, nil }
func (p present) RawManifest() ([]byte, error)        { return nil, errVanished }

type presentImage struct{ present }

var _ v1.Image = presentImage{}

func (presentImage) Layers() ([]v1.Layer, error)             { return nil, errVanished }
func (presentImage) ConfigName() (v1.Hash, error)            { return v1.Hash{}, errVanished }
func (presentImage) ConfigFile() (*v1.ConfigFile, error)     { return nil, errVanished }
func (presentImage) RawConfigFile() ([]byte, error)          { return nil, errVanished }
func (presentImage) Manifest() (*v1.Manifest, error)         { return nil, errVanished }
func (presentImage) LayerByDigest(v1.Hash) (v1.Layer, error) { return nil, errVanished }
func (presentImage) LayerByDiffID(v1.Hash) (v1.Layer, error) { return nil, errVanished }

type presentIndex struct{ present }

var _ v1.ImageIndex = presentIndex{}

func (presentIndex) IndexManifest() (*v1.IndexManifest, error) { return nil, errVanished }
func (presentIndex) Image(v1.Hash) (v1.Image, error)           { return nil, errVanished }
func (presentIndex) ImageIndex(v1.Hash) (v1.ImageIndex, error) { return nil, errVanished }

// counting counts the request bodies sent to the mirror.
type counting struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c counting) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Body == http.NoBody || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return c.rt.RoundTrip(r)
	}
	r2 := r.Clone(r.Context())
	r2.Body = &countingBody{ReadCloser: r.Body, n: c.n}
	return c.rt.RoundTrip(r2)
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

package dynsec

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The data model of Mosquitto's dynamic-security plugin (its
// dynamic_security.h): clients, groups and roles, each list kept in the
// plugin's order so that evaluation and responses match it.

// ACL types, as spelled in the file and in commands.
const (
	aclPubSend      = "publishClientSend"
	aclPubRecv      = "publishClientReceive"
	aclSubLiteral   = "subscribeLiteral"
	aclSubPattern   = "subscribePattern"
	aclUnsubLiteral = "unsubscribeLiteral"
	aclUnsubPattern = "unsubscribePattern"
	aclSubGeneric   = "subscribe"   // defaultACLAccess only
	aclUnsubGeneric = "unsubscribe" // defaultACLAccess only
)

// aclTypes in the order the plugin writes a role's ACLs.
var aclTypes = [...]string{aclPubSend, aclPubRecv, aclSubLiteral, aclSubPattern, aclUnsubLiteral, aclUnsubPattern}

// aclKind indexes role.acls.
type aclKind int

const (
	kPubSend aclKind = iota
	kPubRecv
	kSubLiteral
	kSubPattern
	kUnsubLiteral
	kUnsubPattern
)

// kindOf maps an acltype (case-insensitive, as strcasecmp) to its index.
func kindOf(s string) (aclKind, bool) {
	for i, t := range aclTypes {
		if strings.EqualFold(s, t) {
			return aclKind(i), true
		}
	}
	return 0, false
}

const (
	saltLen           = 12  // SALT_LEN
	hashLen           = 64  // SHA-512
	defaultIterations = 101 // PW_DEFAULT_ITERATIONS of the plugin
)

// password is a PBKDF2-SHA512 hash as the plugin stores it.
type password struct {
	hash       [hashLen]byte
	salt       [saltLen]byte
	iterations int
}

// newPassword hashes pw with a fresh salt.
func newPassword(pw string) (*password, error) {
	p := &password{iterations: defaultIterations}
	if _, err := rand.Read(p.salt[:]); err != nil {
		return nil, err
	}
	h, err := pbkdf2.Key(sha512.New, pw, p.salt[:], p.iterations, hashLen)
	if err != nil {
		return nil, err
	}
	copy(p.hash[:], h)
	return p, nil
}

// check compares pw in constant time.
func (p *password) check(pw string) bool {
	if p.iterations < 1 {
		return false
	}
	h, err := pbkdf2.Key(sha512.New, pw, p.salt[:], p.iterations, hashLen)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(h, p.hash[:]) == 1
}

// optString is a text field that may be absent (NULL in the plugin).
type optString struct {
	s   string
	set bool
}

func some(s string) optString { return optString{s, true} }

// ref is an entry of a role list, group list or client list.
type ref struct {
	name     string
	priority int // -1 when not given
}

// addRoleRef inserts r sorted by priority (highest first), then name, as
// the plugin's rolelist/grouplist; false when name is already there.
func addRef(list []ref, r ref) ([]ref, bool) {
	for _, e := range list {
		if e.name == r.name {
			return list, false
		}
	}
	i := 0
	for i < len(list) {
		e := list[i]
		if r.priority > e.priority || (r.priority == e.priority && r.name < e.name) {
			break
		}
		i++
	}
	return slices.Insert(list, i, r), true
}

// addNameRef inserts r sorted by name only (a group's client list).
func addNameRef(list []ref, r ref) ([]ref, bool) {
	i, found := slices.BinarySearchFunc(list, r.name, func(e ref, n string) int { return strings.Compare(e.name, n) })
	if found {
		return list, false
	}
	return slices.Insert(list, i, r), true
}

func removeRef(list []ref, name string) ([]ref, bool) {
	i := slices.IndexFunc(list, func(e ref) bool { return e.name == name })
	if i < 0 {
		return list, false
	}
	return slices.Delete(list, i, i+1), true
}

func hasRef(list []ref, name string) bool {
	return slices.ContainsFunc(list, func(e ref) bool { return e.name == name })
}

type client struct {
	username string
	clientid optString
	textname optString
	textdesc optString
	disabled bool
	pw       *password // nil: no password (never authenticates here)
	roles    []ref
	groups   []ref
}

type group struct {
	name     string
	textname optString
	textdesc optString
	roles    []ref
	clients  []ref // sorted by username
}

type acl struct {
	topic    string
	priority int
	allow    bool
}

type role struct {
	name     string
	textname optString
	textdesc optString
	acls     [len(aclTypes)][]acl
}

// addACL inserts a by priority, highest first, after equal priorities.
func (r *role) addACL(k aclKind, a acl) {
	l := r.acls[k]
	i := 0
	for i < len(l) && l[i].priority >= a.priority {
		i++
	}
	r.acls[k] = slices.Insert(l, i, a)
}

func (r *role) findACL(k aclKind, topic string) int {
	return slices.IndexFunc(r.acls[k], func(a acl) bool { return a.topic == topic })
}

// defaultAccess is defaultACLAccess: what happens when no ACL matched.
type defaultAccess struct {
	pubSend, pubRecv, subscribe, unsubscribe bool
}

// data is the whole state: what the file holds.
type data struct {
	clients map[string]*client
	groups  map[string]*group
	roles   map[string]*role
	anon    string // anonymous group name, "" for none
	def     defaultAccess
}

func newData() *data {
	return &data{clients: map[string]*client{}, groups: map[string]*group{}, roles: map[string]*role{}}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// ---- loading ----

// ErrFile reports a configuration file the plugin would not load.
var ErrFile = errors.New("dynsec: configuration file")

// parseFile reads the file's JSON as the plugin does: entries that are
// malformed are skipped, a top-level list of the wrong type is an error.
// An empty file is an empty configuration.
func parseFile(b []byte) (*data, error) {
	d := newData()
	if len(bytes.TrimSpace(b)) == 0 {
		return d, nil
	}
	v, err := parseJSON(b)
	if err != nil {
		return nil, fmt.Errorf("%w is not valid JSON: %v", ErrFile, err)
	}
	root, ok := v.(jobj)
	if !ok {
		return nil, fmt.Errorf("%w is not a JSON object", ErrFile)
	}
	if da, ok := root.get("defaultACLAccess"); ok {
		if o, ok := da.(jobj); ok {
			get := func(k string) bool { b, _ := o.get(k); v, _ := b.(bool); return v }
			d.def = defaultAccess{get(aclPubSend), get(aclPubRecv), get(aclSubGeneric), get(aclUnsubGeneric)}
		}
	}
	if err := d.loadRoles(root); err != nil {
		return nil, err
	}
	if err := d.loadClients(root); err != nil {
		return nil, err
	}
	if err := d.loadGroups(root); err != nil {
		return nil, err
	}
	return d, nil
}

// listOf returns the objects of root[key]; absent is empty, a non-array
// is an error.
func listOf(root jobj, key string) ([]jobj, error) {
	v, ok := root.get(key)
	if !ok {
		return nil, nil
	}
	a, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not an array", ErrFile, key)
	}
	var out []jobj
	for _, e := range a {
		if o, ok := e.(jobj); ok {
			out = append(out, o)
		}
	}
	return out, nil
}

// loadACLs reads a role's "acls" array into r (dynsec_roles__acl_load).
func loadACLs(r *role, list []any) {
	for k, t := range aclTypes {
		for _, e := range list {
			o, ok := e.(jobj)
			if !ok {
				continue
			}
			at, isStr, _ := o.str("acltype")
			if !isStr || !strings.EqualFold(at, t) {
				continue
			}
			topic, isStr, _ := o.str("topic")
			if !isStr {
				continue
			}
			allow, _ := o.getBool("allow", false)
			r.addACL(aclKind(k), acl{topic: topic, priority: o.getInt("priority", 0), allow: allow})
		}
	}
}

func (d *data) loadRoles(root jobj) error {
	list, err := listOf(root, "roles")
	if err != nil {
		return err
	}
	for _, o := range list {
		name, isStr, _ := o.str("rolename")
		if !isStr {
			continue
		}
		r := &role{name: name}
		if s, ok, _ := o.str("textname"); ok {
			r.textname = some(s)
		}
		if s, ok, _ := o.str("textdescription"); ok {
			r.textdesc = some(s)
		}
		if a, ok := o.array("acls"); ok {
			loadACLs(r, a)
		}
		d.roles[name] = r
	}
	return nil
}

// roleRefs reads a "roles" list of {rolename, priority} (unknown roles are
// dropped, as when the plugin loads its file).
func (d *data) roleRefs(o jobj) []ref {
	var out []ref
	a, ok := o.array("roles")
	if !ok {
		return nil
	}
	for _, e := range a {
		ro, ok := e.(jobj)
		if !ok {
			continue
		}
		name, isStr, _ := ro.str("rolename")
		if !isStr || d.roles[name] == nil {
			continue
		}
		out, _ = addRef(out, ref{name, ro.getInt("priority", -1)})
	}
	return out
}

func decodeB64(s string, n int) ([]byte, bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != n {
		return nil, false
	}
	return b, true
}

func (d *data) loadClients(root jobj) error {
	list, err := listOf(root, "clients")
	if err != nil {
		return err
	}
	for _, o := range list {
		name, isStr, _ := o.str("username")
		if !isStr {
			continue
		}
		c := &client{username: name}
		if v, ok := o.get("disabled"); ok {
			c.disabled, _ = v.(bool)
		}
		salt, sOK, _ := o.str("salt")
		pw, pOK, _ := o.str("password")
		itv, _ := o.get("iterations")
		itn, iOK := itv.(json.Number)
		if sOK && pOK && iOK {
			p := &password{iterations: numberInt(itn)}
			if p.iterations < 1 {
				continue
			}
			sb, ok1 := decodeB64(salt, saltLen)
			hb, ok2 := decodeB64(pw, hashLen)
			if !ok1 || !ok2 {
				continue
			}
			copy(p.salt[:], sb)
			copy(p.hash[:], hb)
			c.pw = p
		}
		if s, ok, _ := o.str("clientid"); ok {
			c.clientid = some(s)
		}
		if s, ok, _ := o.str("textname"); ok {
			c.textname = some(s)
		}
		if s, ok, _ := o.str("textdescription"); ok {
			c.textdesc = some(s)
		}
		c.roles = d.roleRefs(o)
		d.clients[name] = c
	}
	return nil
}

func (d *data) loadGroups(root jobj) error {
	list, err := listOf(root, "groups")
	if err != nil {
		return err
	}
	for _, o := range list {
		name, isStr, _ := o.str("groupname")
		if !isStr {
			continue
		}
		g := &group{name: name}
		if s, ok, _ := o.str("textname"); ok {
			g.textname = some(s)
		}
		if s, ok, _ := o.str("textdescription"); ok {
			g.textdesc = some(s)
		}
		g.roles = d.roleRefs(o)
		d.groups[name] = g
		if a, ok := o.array("clients"); ok {
			for _, e := range a {
				co, ok := e.(jobj)
				if !ok {
					continue
				}
				u, isStr, _ := co.str("username")
				if isStr {
					d.addGroupClient(u, name, co.getInt("priority", -1))
				}
			}
		}
	}
	if s, ok, _ := root.str("anonymousGroup"); ok && d.groups[s] != nil {
		d.anon = s
	}
	return nil
}

// addGroupClient is dynsec_groups__add_client.
func (d *data) addGroupClient(username, groupname string, priority int) error {
	c := d.clients[username]
	if c == nil {
		return errClientNotFound
	}
	g := d.groups[groupname]
	if g == nil {
		return errGroupNotFound
	}
	if hasRef(g.clients, username) {
		return errAlreadyInGroup
	}
	g.clients, _ = addNameRef(g.clients, ref{username, priority})
	c.groups, _ = addRef(c.groups, ref{groupname, priority})
	return nil
}

func (d *data) removeGroupClient(username, groupname string) error {
	c := d.clients[username]
	if c == nil {
		return errClientNotFound
	}
	g := d.groups[groupname]
	if g == nil {
		return errGroupNotFound
	}
	g.clients, _ = removeRef(g.clients, username)
	c.groups, _ = removeRef(c.groups, groupname)
	return nil
}

var (
	errClientNotFound = errors.New("Client not found")
	errGroupNotFound  = errors.New("Group not found")
	errAlreadyInGroup = errors.New("Client is already in this group")
)

// ---- saving ----

func refsJSON(list []ref, key string) []any {
	out := make([]any, 0, len(list))
	for _, r := range list {
		o := obj(key, r.name)
		if r.priority != -1 {
			o.set("priority", r.priority)
		}
		out = append(out, o)
	}
	return out
}

func textFields(o *ordered, name, desc optString) {
	if name.set {
		o.set("textname", name.s)
	}
	if desc.set {
		o.set("textdescription", desc.s)
	}
}

func (r *role) json() *ordered {
	o := obj("rolename", r.name)
	textFields(o, r.textname, r.textdesc)
	acls := []any{}
	for k, t := range aclTypes {
		for _, a := range r.acls[k] {
			acls = append(acls, obj("acltype", t, "topic", a.topic, "priority", a.priority, "allow", a.allow))
		}
	}
	o.set("acls", acls)
	return o
}

// encode renders the file: the plugin's keys in its order.
func (d *data) encode() ([]byte, error) {
	clients := []any{}
	for _, name := range sortedKeys(d.clients) {
		c := d.clients[name]
		o := obj("username", c.username)
		if c.clientid.set {
			o.set("clientid", c.clientid.s)
		}
		textFields(o, c.textname, c.textdesc)
		if c.disabled {
			o.set("disabled", true)
		}
		o.set("roles", refsJSON(c.roles, "rolename"))
		if c.pw != nil {
			o.set("password", base64.StdEncoding.EncodeToString(c.pw.hash[:]))
			o.set("salt", base64.StdEncoding.EncodeToString(c.pw.salt[:]))
			o.set("iterations", c.pw.iterations)
		}
		clients = append(clients, o)
	}
	groups := []any{}
	for _, name := range sortedKeys(d.groups) {
		g := d.groups[name]
		o := obj("groupname", g.name)
		textFields(o, g.textname, g.textdesc)
		o.set("roles", refsJSON(g.roles, "rolename"))
		o.set("clients", refsJSON(g.clients, "username"))
		groups = append(groups, o)
	}
	roles := []any{}
	for _, name := range sortedKeys(d.roles) {
		roles = append(roles, d.roles[name].json())
	}
	root := obj("defaultACLAccess", obj(aclPubSend, d.def.pubSend, aclPubRecv, d.def.pubRecv,
		aclSubGeneric, d.def.subscribe, aclUnsubGeneric, d.def.unsubscribe),
		"clients", clients, "groups", groups)
	if d.anon != "" {
		root.set("anonymousGroup", d.anon)
	}
	root.set("roles", roles)
	b, err := marshal(root)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "\t"); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// writeFile replaces path atomically: a temporary file in the same
// directory (mode 0600), synced, renamed over it.
func writeFile(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

package dynsec

import (
	"errors"
	"strings"
)

// The control API: a JSON {"commands":[...]} published to ControlTopic is
// answered with {"responses":[...]} on ResponseTopic, one response per
// command, with the keys and error strings of Mosquitto's plugin.

// kicks are the clients a batch of commands disconnects.
type kicks struct {
	users map[string]bool
	anon  bool
}

func (k *kicks) user(u string) {
	if k.users == nil {
		k.users = map[string]bool{}
	}
	k.users[u] = true
}

// batch is one control message being processed.
type batch struct {
	d     *data
	out   []any
	dirty bool
	kick  kicks
}

// reply is dynsec__command_reply.
func (b *batch) reply(cmd, errMsg string, corr *string) {
	o := obj("command", cmd)
	if errMsg != "" {
		o.set("error", errMsg)
	}
	if corr != nil {
		o.set("correlationData", *corr)
	}
	b.out = append(b.out, o)
}

// data appends a response carrying data.
func (b *batch) data(cmd string, data *ordered, corr *string) {
	o := obj("command", cmd, "data", data)
	if corr != nil {
		o.set("correlationData", *corr)
	}
	b.out = append(b.out, o)
}

// Handle processes one control message from the client clientID (user
// name username) and returns the response payload, and the clients to
// disconnect. The state is saved to the file when a command changed it.
func (p *Plugin) Handle(clientID, username string, payload []byte) ([]byte, kicks) {
	p.mu.Lock()
	b := &batch{d: p.d}
	b.run(payload)
	var file []byte
	var err error
	if b.dirty {
		p.log.Info("dynsec: configuration changed", "client", clientID, "username", username)
		file, err = p.d.encode()
	}
	// The file is written outside p.mu (checks go on meanwhile) but in
	// the order of the changes: saveMu is taken before p.mu is released.
	p.saveMu.Lock()
	p.mu.Unlock()
	if b.dirty && err == nil {
		err = writeFile(p.opts.ConfigFile, file)
	}
	p.saveMu.Unlock()
	if err != nil {
		p.log.Error("dynsec: configuration not saved", "file", p.opts.ConfigFile, "err", err)
	}
	resp, err := marshal(obj("responses", b.out))
	if err != nil {
		// Only unencodable values fail; everything here is strings, numbers, booleans.
		resp = []byte(`{"responses":[]}`)
	}
	return resp, b.kick
}

// Save writes the current state to the configuration file.
func (p *Plugin) Save() error {
	p.mu.RLock()
	out, err := p.d.encode()
	p.saveMu.Lock()
	p.mu.RUnlock()
	defer p.saveMu.Unlock()
	if err != nil {
		return err
	}
	return writeFile(p.opts.ConfigFile, out)
}

// DecodeCommands parses a control payload into its commands, or returns
// the error text the plugin answers with.
func DecodeCommands(payload []byte) ([]any, string) {
	v, err := parseJSON(payload)
	if err != nil {
		return nil, "Payload not valid JSON"
	}
	root, _ := v.(jobj)
	cmds, ok := root.array("commands")
	if !ok {
		return nil, "Invalid/missing commands"
	}
	return cmds, ""
}

func (b *batch) run(payload []byte) {
	cmds, errMsg := DecodeCommands(payload)
	if errMsg != "" {
		b.reply("Unknown command", errMsg, nil)
		return
	}
	var corr *string
	for _, e := range cmds {
		o, ok := e.(jobj)
		if !ok {
			b.reply("Unknown command", "Command not an object", corr)
			continue
		}
		name, _, ok := o.getString("command", false)
		if !ok {
			b.reply("Unknown command", "Missing command", corr)
			continue
		}
		cd, has, ok := o.getString("correlationData", true)
		if !ok {
			b.reply(name, "Invalid correlationData data type.", nil)
			return // the plugin stops at this command
		}
		corr = nil
		if has {
			corr = &cd
		}
		h := handlers[strings.ToLower(name)]
		if h == nil {
			b.reply(name, "Unknown command", corr)
			continue
		}
		h(b, o, corr)
	}
}

type handler func(b *batch, cmd jobj, corr *string)

var handlers map[string]handler

func init() {
	handlers = map[string]handler{}
	for name, h := range map[string]handler{
		"setDefaultACLAccess": (*batch).setDefaultACLAccess,
		"getDefaultACLAccess": (*batch).getDefaultACLAccess,
		"createClient":        (*batch).createClient,
		"deleteClient":        (*batch).deleteClient,
		"getClient":           (*batch).getClient,
		"listClients":         (*batch).listClients,
		"modifyClient":        (*batch).modifyClient,
		"setClientPassword":   (*batch).setClientPassword,
		"setClientId":         (*batch).setClientID,
		"addClientRole":       (*batch).addClientRole,
		"removeClientRole":    (*batch).removeClientRole,
		"enableClient":        (*batch).enableClient,
		"disableClient":       (*batch).disableClient,
		"addGroupClient":      (*batch).addGroupClient,
		"createGroup":         (*batch).createGroup,
		"deleteGroup":         (*batch).deleteGroup,
		"getGroup":            (*batch).getGroup,
		"listGroups":          (*batch).listGroups,
		"modifyGroup":         (*batch).modifyGroup,
		"removeGroupClient":   (*batch).removeGroupClient,
		"addGroupRole":        (*batch).addGroupRole,
		"removeGroupRole":     (*batch).removeGroupRole,
		"setAnonymousGroup":   (*batch).setAnonymousGroup,
		"getAnonymousGroup":   (*batch).getAnonymousGroup,
		"createRole":          (*batch).createRole,
		"getRole":             (*batch).getRole,
		"listRoles":           (*batch).listRoles,
		"modifyRole":          (*batch).modifyRole,
		"deleteRole":          (*batch).deleteRole,
		"addRoleACL":          (*batch).addRoleACL,
		"removeRoleACL":       (*batch).removeRoleACL,
	} {
		handlers[strings.ToLower(name)] = h
	}
}

// name reads a required, valid UTF-8 name field; it replies and returns
// false when it is not.
func (b *batch) name(cmd string, o jobj, key, missing, invalid string, corr *string) (string, bool) {
	s, _, ok := o.getString(key, false)
	if !ok {
		b.reply(cmd, missing, corr)
		return "", false
	}
	if invalid != "" && !validUTF8(s) {
		b.reply(cmd, invalid, corr)
		return "", false
	}
	return s, true
}

func (b *batch) username(cmd string, o jobj, corr *string) (string, bool) {
	return b.name(cmd, o, "username", "Invalid/missing username", "Username not valid UTF-8", corr)
}

func (b *batch) groupname(cmd string, o jobj, corr *string) (string, bool) {
	return b.name(cmd, o, "groupname", "Invalid/missing groupname", "Group name not valid UTF-8", corr)
}

func (b *batch) rolename(cmd string, o jobj, corr *string) (string, bool) {
	return b.name(cmd, o, "rolename", "Invalid/missing rolename", "Role name not valid UTF-8", corr)
}

// loadRoleList is dynsec_rolelist__load_from_json.
var (
	errListNotFound = errors.New("no list")
	errRoleNotFound = errors.New("Role not found")
	errRoleList     = errors.New("'roles' not an array or missing/invalid rolename")
)

func (d *data) loadRoleList(o jobj) ([]ref, error) {
	v, ok := o.get("roles")
	if !ok {
		return nil, errListNotFound
	}
	a, ok := v.([]any)
	if !ok {
		return nil, errRoleList
	}
	var out []ref
	for _, e := range a {
		ro, _ := e.(jobj)
		name, isStr, _ := ro.str("rolename")
		if !isStr {
			return nil, errRoleList
		}
		if d.roles[name] == nil {
			return nil, errRoleNotFound
		}
		out, _ = addRef(out, ref{name, ro.getInt("priority", -1)})
	}
	return out, nil
}

// optText reads an optional textname/textdescription.
func (b *batch) optText(cmd string, o jobj, key, missing string, corr *string) (optString, bool) {
	s, has, ok := o.getString(key, true)
	if !ok {
		b.reply(cmd, missing, corr)
		return optString{}, false
	}
	if !has {
		return optString{}, true
	}
	return some(s), true
}

// ---- default ACL access ----

func (b *batch) setDefaultACLAccess(o jobj, corr *string) {
	const cmd = "setDefaultACLAccess"
	acls, ok := o.array("acls")
	if !ok {
		b.reply(cmd, "Missing/invalid actions array", corr)
		return
	}
	for _, e := range acls {
		a, _ := e.(jobj)
		t, isStr, _ := a.str("acltype")
		av, _ := a.get("allow")
		allow, isBool := av.(bool)
		if !isStr || !isBool {
			continue
		}
		switch {
		case strings.EqualFold(t, aclPubSend):
			b.d.def.pubSend = allow
		case strings.EqualFold(t, aclPubRecv):
			b.d.def.pubRecv = allow
		case strings.EqualFold(t, aclSubGeneric):
			b.d.def.subscribe = allow
		case strings.EqualFold(t, aclUnsubGeneric):
			b.d.def.unsubscribe = allow
		}
	}
	b.dirty = true
	b.reply(cmd, "", corr)
}

func (b *batch) getDefaultACLAccess(_ jobj, corr *string) {
	d := b.d.def
	acls := []any{
		obj("acltype", aclPubSend, "allow", d.pubSend),
		obj("acltype", aclPubRecv, "allow", d.pubRecv),
		obj("acltype", aclSubGeneric, "allow", d.subscribe),
		obj("acltype", aclUnsubGeneric, "allow", d.unsubscribe),
	}
	b.data("getDefaultACLAccess", obj("acls", acls), corr)
}

// ---- clients ----

func (b *batch) createClient(o jobj, corr *string) {
	const cmd = "createClient"
	d := b.d
	username, ok := b.username(cmd, o, corr)
	if !ok {
		return
	}
	pw, hasPW, ok := o.getString("password", true)
	if !ok {
		b.reply(cmd, "Invalid/missing password", corr)
		return
	}
	cid, hasCID, ok := o.getString("clientid", true)
	if !ok {
		b.reply(cmd, "Invalid/missing client id", corr)
		return
	}
	if hasCID && !validUTF8(cid) {
		b.reply(cmd, "Client ID not valid UTF-8", corr)
		return
	}
	tn, ok := b.optText(cmd, o, "textname", "Invalid/missing textname", corr)
	if !ok {
		return
	}
	td, ok := b.optText(cmd, o, "textdescription", "Invalid/missing textdescription", corr)
	if !ok {
		return
	}
	if d.clients[username] != nil {
		b.reply(cmd, "Client already exists", corr)
		return
	}
	c := &client{username: username, textname: tn, textdesc: td}
	if hasPW {
		p, err := newPassword(pw)
		if err != nil {
			b.reply(cmd, "Internal error", corr)
			return
		}
		c.pw = p
	}
	if hasCID && cid != "" {
		c.clientid = some(cid)
	}
	roles, err := d.loadRoleList(o)
	switch {
	case err == nil || errors.Is(err, errListNotFound):
		c.roles = roles
	case errors.Is(err, errRoleNotFound):
		b.reply(cmd, "Role not found", corr)
		return
	default:
		b.reply(cmd, err.Error(), corr)
		return
	}
	d.clients[username] = c
	if groups, ok := o.array("groups"); ok {
		for _, e := range groups {
			g, isObj := e.(jobj)
			if !isObj {
				continue
			}
			gn, isStr, _ := g.str("groupname")
			if !isStr {
				continue
			}
			if err := d.addGroupClient(username, gn, g.getInt("priority", -1)); err != nil {
				d.deleteClient(username)
				if errors.Is(err, errGroupNotFound) {
					b.reply(cmd, "Group not found", corr)
				} else {
					b.reply(cmd, "Internal error", corr)
				}
				return
			}
		}
	}
	b.dirty = true
	b.reply(cmd, "", corr)
}

// deleteClient removes a client from its groups and the client list.
func (d *data) deleteClient(username string) {
	c := d.clients[username]
	if c == nil {
		return
	}
	for _, g := range c.groups {
		if gr := d.groups[g.name]; gr != nil {
			gr.clients, _ = removeRef(gr.clients, username)
		}
	}
	delete(d.clients, username)
}

func (b *batch) deleteClient(o jobj, corr *string) {
	const cmd = "deleteClient"
	username, ok := b.name(cmd, o, "username", "Invalid/missing username", "", corr)
	if !ok {
		return
	}
	if b.d.clients[username] == nil {
		b.reply(cmd, "Client not found", corr)
		return
	}
	b.d.deleteClient(username)
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kick.user(username)
}

// findClient reads the user name and finds the client, replying when it
// cannot.
func (b *batch) findClient(cmd string, o jobj, corr *string) (*client, bool) {
	username, ok := b.username(cmd, o, corr)
	if !ok {
		return nil, false
	}
	c := b.d.clients[username]
	if c == nil {
		b.reply(cmd, "Client not found", corr)
		return nil, false
	}
	return c, true
}

func (b *batch) disableClient(o jobj, corr *string) {
	c, ok := b.findClient("disableClient", o, corr)
	if !ok {
		return
	}
	c.disabled = true
	b.kick.user(c.username)
	b.dirty = true
	b.reply("disableClient", "", corr)
}

func (b *batch) enableClient(o jobj, corr *string) {
	c, ok := b.findClient("enableClient", o, corr)
	if !ok {
		return
	}
	c.disabled = false
	b.dirty = true
	b.reply("enableClient", "", corr)
}

func (b *batch) setClientID(o jobj, corr *string) {
	const cmd = "setClientId"
	username, ok := b.username(cmd, o, corr)
	if !ok {
		return
	}
	cid, has, ok := o.getString("clientid", true)
	if !ok {
		b.reply(cmd, "Invalid/missing client ID", corr)
		return
	}
	if has && !validUTF8(cid) {
		b.reply(cmd, "Client ID not valid UTF-8", corr)
		return
	}
	c := b.d.clients[username]
	if c == nil {
		b.reply(cmd, "Client not found", corr)
		return
	}
	c.clientid = optString{}
	if has && cid != "" {
		c.clientid = some(cid)
	}
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kick.user(username)
}

func (b *batch) setClientPassword(o jobj, corr *string) {
	const cmd = "setClientPassword"
	username, ok := b.username(cmd, o, corr)
	if !ok {
		return
	}
	pw, _, ok := o.getString("password", false)
	if !ok {
		b.reply(cmd, "Invalid/missing password", corr)
		return
	}
	if pw == "" {
		b.reply(cmd, "Empty password is not allowed", corr)
		return
	}
	c := b.d.clients[username]
	if c == nil {
		b.reply(cmd, "Client not found", corr)
		return
	}
	p, err := newPassword(pw)
	if err != nil {
		c.pw = nil
		b.reply(cmd, "Internal error", corr)
		return
	}
	c.pw = p
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kick.user(username)
}

func (b *batch) modifyClient(o jobj, corr *string) {
	const cmd = "modifyClient"
	c, ok := b.findClient(cmd, o, corr)
	if !ok {
		return
	}
	d := b.d
	if s, isStr, _ := o.str("clientid"); isStr {
		c.clientid = optString{}
		if s != "" {
			c.clientid = some(s)
		}
	}
	if s, isStr, _ := o.str("password"); isStr && s != "" {
		p, err := newPassword(s)
		if err != nil {
			c.pw = nil
			b.reply(cmd, "Internal error", corr)
			b.kick.user(c.username)
			return
		}
		c.pw = p
	}
	if s, isStr, _ := o.str("textname"); isStr {
		c.textname = some(s)
	}
	if s, isStr, _ := o.str("textdescription"); isStr {
		c.textdesc = some(s)
	}
	roles, err := d.loadRoleList(o)
	switch {
	case err == nil:
		c.roles = roles
	case errors.Is(err, errListNotFound):
	default:
		b.reply(cmd, err.Error(), corr)
		b.kick.user(c.username)
		return
	}
	if groups, ok := o.array("groups"); ok {
		for _, g := range append([]ref(nil), c.groups...) {
			d.removeGroupClient(c.username, g.name)
		}
		for _, e := range groups {
			g, _ := e.(jobj)
			if gn, isStr, _ := g.str("groupname"); isStr {
				d.addGroupClient(c.username, gn, g.getInt("priority", -1))
			}
		}
	}
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kick.user(c.username)
}

func (d *data) clientJSON(c *client) *ordered {
	o := obj("username", c.username)
	if c.clientid.set {
		o.set("clientid", c.clientid.s)
	}
	textFields(o, c.textname, c.textdesc)
	if c.disabled {
		o.set("disabled", true)
	}
	o.set("roles", refsJSON(c.roles, "rolename"))
	o.set("groups", refsJSON(c.groups, "groupname"))
	return o
}

func (b *batch) getClient(o jobj, corr *string) {
	c, ok := b.findClient("getClient", o, corr)
	if !ok {
		return
	}
	b.data("getClient", obj("client", b.d.clientJSON(c)), corr)
}

// page applies listX's verbose/count/offset to the sorted names.
func page(o jobj, names []string, item func(name string, verbose bool) any) []any {
	verbose, _ := o.getBool("verbose", false)
	count := o.getInt("count", -1)
	offset := o.getInt("offset", 0)
	out := []any{}
	for i, n := range names {
		if i < offset {
			continue
		}
		out = append(out, item(n, verbose))
		if count >= 0 {
			count--
			if count <= 0 {
				break
			}
		}
	}
	return out
}

func (b *batch) listClients(o jobj, corr *string) {
	names := sortedKeys(b.d.clients)
	list := page(o, names, func(n string, verbose bool) any {
		if verbose {
			return b.d.clientJSON(b.d.clients[n])
		}
		return n
	})
	b.data("listClients", obj("totalCount", len(names), "clients", list), corr)
}

// clientRole reads username and rolename for add/removeClientRole.
func (b *batch) clientRole(cmd string, o jobj, corr *string) (*client, *role, bool) {
	username, ok := b.username(cmd, o, corr)
	if !ok {
		return nil, nil, false
	}
	rolename, ok := b.rolename(cmd, o, corr)
	if !ok {
		return nil, nil, false
	}
	c := b.d.clients[username]
	if c == nil {
		b.reply(cmd, "Client not found", corr)
		return nil, nil, false
	}
	r := b.d.roles[rolename]
	if r == nil {
		b.reply(cmd, "Role not found", corr)
		return nil, nil, false
	}
	return c, r, true
}

func (b *batch) addClientRole(o jobj, corr *string) {
	const cmd = "addClientRole"
	c, r, ok := b.clientRole(cmd, o, corr)
	if !ok {
		return
	}
	var added bool
	c.roles, added = addRef(c.roles, ref{r.name, o.getInt("priority", -1)})
	if !added {
		b.reply(cmd, "Internal error", corr) // as the plugin answers a role the client already has
		return
	}
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kick.user(c.username)
}

func (b *batch) removeClientRole(o jobj, corr *string) {
	const cmd = "removeClientRole"
	c, r, ok := b.clientRole(cmd, o, corr)
	if !ok {
		return
	}
	c.roles, _ = removeRef(c.roles, r.name)
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kick.user(c.username)
}

// ---- groups ----

// kickGroup is group__kick_all: the group's clients, and the anonymous
// clients when it is the anonymous group.
func (b *batch) kickGroup(g *group) {
	if g.name == b.d.anon {
		b.kick.anon = true
	}
	for _, c := range g.clients {
		b.kick.user(c.name)
	}
}

func (b *batch) groupClient(cmd string, o jobj, corr *string) (string, string, bool) {
	username, ok := b.username(cmd, o, corr)
	if !ok {
		return "", "", false
	}
	groupname, ok := b.groupname(cmd, o, corr)
	if !ok {
		return "", "", false
	}
	return username, groupname, true
}

func (b *batch) addGroupClient(o jobj, corr *string) {
	const cmd = "addGroupClient"
	username, groupname, ok := b.groupClient(cmd, o, corr)
	if !ok {
		return
	}
	err := b.d.addGroupClient(username, groupname, o.getInt("priority", -1))
	if err == nil {
		b.dirty = true
		b.reply(cmd, "", corr)
	} else {
		b.reply(cmd, err.Error(), corr)
	}
	b.kick.user(username)
}

func (b *batch) removeGroupClient(o jobj, corr *string) {
	const cmd = "removeGroupClient"
	username, groupname, ok := b.groupClient(cmd, o, corr)
	if !ok {
		return
	}
	err := b.d.removeGroupClient(username, groupname)
	if err == nil {
		b.dirty = true
		b.reply(cmd, "", corr)
	} else {
		b.reply(cmd, err.Error(), corr)
	}
	b.kick.user(username)
}

func (b *batch) createGroup(o jobj, corr *string) {
	const cmd = "createGroup"
	name, ok := b.groupname(cmd, o, corr)
	if !ok {
		return
	}
	tn, ok := b.optText(cmd, o, "textname", "Invalid/missing textname", corr)
	if !ok {
		return
	}
	td, ok := b.optText(cmd, o, "textdescription", "Invalid/missing textdescription", corr)
	if !ok {
		return
	}
	if b.d.groups[name] != nil {
		b.reply(cmd, "Group already exists", corr)
		return
	}
	g := &group{name: name, textname: tn, textdesc: td}
	roles, err := b.d.loadRoleList(o)
	switch {
	case err == nil || errors.Is(err, errListNotFound):
		g.roles = roles
	case errors.Is(err, errRoleNotFound):
		b.reply(cmd, "Role not found", corr)
		return
	default:
		b.reply(cmd, "Internal error", corr)
		return
	}
	b.d.groups[name] = g
	b.dirty = true
	b.reply(cmd, "", corr)
}

func (b *batch) findGroup(cmd string, o jobj, corr *string) (*group, bool) {
	name, ok := b.groupname(cmd, o, corr)
	if !ok {
		return nil, false
	}
	g := b.d.groups[name]
	if g == nil {
		b.reply(cmd, "Group not found", corr)
		return nil, false
	}
	return g, true
}

func (b *batch) deleteGroup(o jobj, corr *string) {
	const cmd = "deleteGroup"
	g, ok := b.findGroup(cmd, o, corr)
	if !ok {
		return
	}
	b.kickGroup(g)
	for _, c := range g.clients {
		if cl := b.d.clients[c.name]; cl != nil {
			cl.groups, _ = removeRef(cl.groups, g.name)
		}
	}
	delete(b.d.groups, g.name)
	if b.d.anon == g.name {
		b.d.anon = ""
	}
	b.dirty = true
	b.reply(cmd, "", corr)
}

func (d *data) groupJSON(g *group) *ordered {
	o := obj("groupname", g.name)
	textFields(o, g.textname, g.textdesc)
	clients := []any{}
	for _, c := range g.clients {
		clients = append(clients, obj("username", c.name))
	}
	o.set("clients", clients)
	o.set("roles", refsJSON(g.roles, "rolename"))
	return o
}

func (b *batch) getGroup(o jobj, corr *string) {
	g, ok := b.findGroup("getGroup", o, corr)
	if !ok {
		return
	}
	b.data("getGroup", obj("group", b.d.groupJSON(g)), corr)
}

func (b *batch) listGroups(o jobj, corr *string) {
	names := sortedKeys(b.d.groups)
	list := page(o, names, func(n string, verbose bool) any {
		if verbose {
			return b.d.groupJSON(b.d.groups[n])
		}
		return n
	})
	b.data("listGroups", obj("totalCount", len(names), "groups", list), corr)
}

func (b *batch) modifyGroup(o jobj, corr *string) {
	const cmd = "modifyGroup"
	g, ok := b.findGroup(cmd, o, corr)
	if !ok {
		return
	}
	if s, isStr, _ := o.str("textname"); isStr {
		g.textname = some(s)
	}
	if s, isStr, _ := o.str("textdescription"); isStr {
		g.textdesc = some(s)
	}
	roles, err := b.d.loadRoleList(o)
	switch {
	case err == nil:
		g.roles = roles
	case errors.Is(err, errListNotFound):
	default:
		b.reply(cmd, err.Error(), corr)
		b.kickGroup(g)
		return
	}
	if clients, ok := o.array("clients"); ok {
		for _, c := range append([]ref(nil), g.clients...) {
			b.d.removeGroupClient(c.name, g.name)
		}
		for _, e := range clients {
			co, _ := e.(jobj)
			if u, isStr, _ := co.str("username"); isStr {
				b.d.addGroupClient(u, g.name, co.getInt("priority", -1))
			}
		}
	}
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kickGroup(g)
}

func (b *batch) groupRole(cmd string, o jobj, corr *string) (*group, *role, bool) {
	groupname, ok := b.groupname(cmd, o, corr)
	if !ok {
		return nil, nil, false
	}
	rolename, ok := b.rolename(cmd, o, corr)
	if !ok {
		return nil, nil, false
	}
	g := b.d.groups[groupname]
	if g == nil {
		b.reply(cmd, "Group not found", corr)
		return nil, nil, false
	}
	r := b.d.roles[rolename]
	if r == nil {
		b.reply(cmd, "Role not found", corr)
		return nil, nil, false
	}
	return g, r, true
}

func (b *batch) addGroupRole(o jobj, corr *string) {
	const cmd = "addGroupRole"
	g, r, ok := b.groupRole(cmd, o, corr)
	if !ok {
		return
	}
	var added bool
	g.roles, added = addRef(g.roles, ref{r.name, o.getInt("priority", -1)})
	if !added {
		b.reply(cmd, "Group is already in this role", corr)
		return
	}
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kickGroup(g)
}

func (b *batch) removeGroupRole(o jobj, corr *string) {
	const cmd = "removeGroupRole"
	g, r, ok := b.groupRole(cmd, o, corr)
	if !ok {
		return
	}
	g.roles, _ = removeRef(g.roles, r.name)
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kickGroup(g)
}

func (b *batch) setAnonymousGroup(o jobj, corr *string) {
	const cmd = "setAnonymousGroup"
	g, ok := b.findGroup(cmd, o, corr)
	if !ok {
		return
	}
	b.d.anon = g.name
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kick.anon = true
}

func (b *batch) getAnonymousGroup(_ jobj, corr *string) {
	b.data("getAnonymousGroup", obj("group", obj("groupname", b.d.anon)), corr)
}

// ---- roles ----

func (b *batch) createRole(o jobj, corr *string) {
	const cmd = "createRole"
	name, ok := b.rolename(cmd, o, corr)
	if !ok {
		return
	}
	tn, ok := b.optText(cmd, o, "textname", "Invalid/missing textname", corr)
	if !ok {
		return
	}
	td, ok := b.optText(cmd, o, "textdescription", "Invalid/missing textdescription", corr)
	if !ok {
		return
	}
	if b.d.roles[name] != nil {
		b.reply(cmd, "Role already exists", corr)
		return
	}
	r := &role{name: name, textname: tn, textdesc: td}
	if a, ok := o.array("acls"); ok {
		loadACLs(r, a)
	}
	b.d.roles[name] = r
	b.dirty = true
	b.reply(cmd, "", corr)
}

// kickRole disconnects everyone the role applies to (role__kick_all).
func (b *batch) kickRole(name string) {
	for _, c := range b.d.clients {
		if hasRef(c.roles, name) {
			b.kick.user(c.username)
		}
	}
	for _, g := range b.d.groups {
		if hasRef(g.roles, name) {
			b.kickGroup(g)
		}
	}
}

func (b *batch) findRole(cmd, notFound string, o jobj, corr *string) (*role, bool) {
	name, ok := b.rolename(cmd, o, corr)
	if !ok {
		return nil, false
	}
	r := b.d.roles[name]
	if r == nil {
		b.reply(cmd, notFound, corr)
		return nil, false
	}
	return r, true
}

func (b *batch) deleteRole(o jobj, corr *string) {
	const cmd = "deleteRole"
	r, ok := b.findRole(cmd, "Role not found", o, corr)
	if !ok {
		return
	}
	b.kickRole(r.name)
	for _, c := range b.d.clients {
		c.roles, _ = removeRef(c.roles, r.name)
	}
	for _, g := range b.d.groups {
		g.roles, _ = removeRef(g.roles, r.name)
	}
	delete(b.d.roles, r.name)
	b.dirty = true
	b.reply(cmd, "", corr)
}

func (b *batch) getRole(o jobj, corr *string) {
	r, ok := b.findRole("getRole", "Role not found", o, corr)
	if !ok {
		return
	}
	b.data("getRole", obj("role", r.json()), corr)
}

func (b *batch) listRoles(o jobj, corr *string) {
	names := sortedKeys(b.d.roles)
	list := page(o, names, func(n string, verbose bool) any {
		if verbose {
			return b.d.roles[n].json()
		}
		return n
	})
	b.data("listRoles", obj("totalCount", len(names), "roles", list), corr)
}

func (b *batch) modifyRole(o jobj, corr *string) {
	const cmd = "modifyRole"
	r, ok := b.findRole(cmd, "Role does not exist", o, corr)
	if !ok {
		return
	}
	if s, isStr, _ := o.str("textname"); isStr {
		r.textname = some(s)
	}
	if s, isStr, _ := o.str("textdescription"); isStr {
		r.textdesc = some(s)
	}
	if a, ok := o.array("acls"); ok {
		r.acls = [len(aclTypes)][]acl{}
		loadACLs(r, a)
	}
	b.dirty = true
	b.reply(cmd, "", corr)
}

// roleACL reads the role, acltype and topic of add/removeRoleACL.
func (b *batch) roleACL(cmd string, o jobj, corr *string) (*role, aclKind, string, bool) {
	r, ok := b.findRole(cmd, "Role not found", o, corr)
	if !ok {
		return nil, 0, "", false
	}
	t, isStr, _ := o.str("acltype")
	if !isStr {
		b.reply(cmd, "Invalid/missing acltype", corr)
		return nil, 0, "", false
	}
	k, ok := kindOf(t)
	if !ok {
		b.reply(cmd, "Unknown acltype", corr)
		return nil, 0, "", false
	}
	tp, isStr, _ := o.str("topic")
	if !isStr {
		b.reply(cmd, "Invalid/missing topic", corr)
		return nil, 0, "", false
	}
	if !validUTF8(tp) {
		b.reply(cmd, "Topic not valid UTF-8", corr)
		return nil, 0, "", false
	}
	if !validACLTopic(tp) {
		b.reply(cmd, "Invalid ACL topic", corr)
		return nil, 0, "", false
	}
	return r, k, tp, true
}

func (b *batch) addRoleACL(o jobj, corr *string) {
	const cmd = "addRoleACL"
	r, k, tp, ok := b.roleACL(cmd, o, corr)
	if !ok {
		return
	}
	if r.findACL(k, tp) >= 0 {
		b.reply(cmd, "ACL with this topic already exists", corr)
		return
	}
	allow, _ := o.getBool("allow", false)
	r.addACL(k, acl{topic: tp, priority: o.getInt("priority", 0), allow: allow})
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kickRole(r.name)
}

func (b *batch) removeRoleACL(o jobj, corr *string) {
	const cmd = "removeRoleACL"
	r, k, tp, ok := b.roleACL(cmd, o, corr)
	if !ok {
		return
	}
	i := r.findACL(k, tp)
	if i < 0 {
		b.reply(cmd, "ACL not found", corr)
		return
	}
	r.acls[k] = append(r.acls[k][:i:i], r.acls[k][i+1:]...)
	b.dirty = true
	b.reply(cmd, "", corr)
	b.kickRole(r.name)
}

package listener

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
)

// suite is one TLS 1.0-1.2 cipher suite Go implements, under its OpenSSL
// name, with the OpenSSL aliases that select it.
type suite struct {
	name    string // OpenSSL name
	id      uint16
	secure  bool     // in tls.CipherSuites(), not tls.InsecureCipherSuites()
	aliases []string // OpenSSL cipher-string keywords that match it
}

// suites lists Go's TLS 1.0-1.2 suites. Keywords follow OpenSSL's ciphers(1):
// key exchange (kRSA, kECDHE), authentication (aRSA, aECDSA), encryption
// (AES128, AESGCM, CHACHA20, 3DES, RC4) and MAC (SHA1, SHA256, SHA384).
var suites = []suite{
	{"ECDHE-ECDSA-AES128-GCM-SHA256", tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true,
		[]string{"kECDHE", "aECDSA", "AES", "AES128", "AESGCM", "SHA256", "TLSv1.2"}},
	{"ECDHE-RSA-AES128-GCM-SHA256", tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, true,
		[]string{"kECDHE", "aRSA", "AES", "AES128", "AESGCM", "SHA256", "TLSv1.2"}},
	{"ECDHE-ECDSA-AES256-GCM-SHA384", tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true,
		[]string{"kECDHE", "aECDSA", "AES", "AES256", "AESGCM", "SHA384", "TLSv1.2"}},
	{"ECDHE-RSA-AES256-GCM-SHA384", tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, true,
		[]string{"kECDHE", "aRSA", "AES", "AES256", "AESGCM", "SHA384", "TLSv1.2"}},
	{"ECDHE-ECDSA-CHACHA20-POLY1305", tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true,
		[]string{"kECDHE", "aECDSA", "CHACHA20", "TLSv1.2"}},
	{"ECDHE-RSA-CHACHA20-POLY1305", tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, true,
		[]string{"kECDHE", "aRSA", "CHACHA20", "TLSv1.2"}},
	{"ECDHE-ECDSA-AES128-SHA", tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, true,
		[]string{"kECDHE", "aECDSA", "AES", "AES128", "SHA1", "SSLv3"}},
	{"ECDHE-RSA-AES128-SHA", tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, true,
		[]string{"kECDHE", "aRSA", "AES", "AES128", "SHA1", "SSLv3"}},
	{"ECDHE-ECDSA-AES256-SHA", tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, true,
		[]string{"kECDHE", "aECDSA", "AES", "AES256", "SHA1", "SSLv3"}},
	{"ECDHE-RSA-AES256-SHA", tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA, true,
		[]string{"kECDHE", "aRSA", "AES", "AES256", "SHA1", "SSLv3"}},
	// Go counts the rest as insecure (RSA key exchange, CBC-SHA256, 3DES,
	// RC4): only an explicit name or keyword selects them, never DEFAULT,
	// HIGH or ALL.
	{"AES128-GCM-SHA256", tls.TLS_RSA_WITH_AES_128_GCM_SHA256, false,
		[]string{"kRSA", "aRSA", "AES", "AES128", "AESGCM", "SHA256", "TLSv1.2"}},
	{"AES256-GCM-SHA384", tls.TLS_RSA_WITH_AES_256_GCM_SHA384, false,
		[]string{"kRSA", "aRSA", "AES", "AES256", "AESGCM", "SHA384", "TLSv1.2"}},
	{"AES128-SHA", tls.TLS_RSA_WITH_AES_128_CBC_SHA, false,
		[]string{"kRSA", "aRSA", "AES", "AES128", "SHA1", "SSLv3"}},
	{"AES256-SHA", tls.TLS_RSA_WITH_AES_256_CBC_SHA, false,
		[]string{"kRSA", "aRSA", "AES", "AES256", "SHA1", "SSLv3"}},
	{"ECDHE-ECDSA-AES128-SHA256", tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, false,
		[]string{"kECDHE", "aECDSA", "AES", "AES128", "SHA256", "TLSv1.2"}},
	{"ECDHE-RSA-AES128-SHA256", tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, false,
		[]string{"kECDHE", "aRSA", "AES", "AES128", "SHA256", "TLSv1.2"}},
	{"AES128-SHA256", tls.TLS_RSA_WITH_AES_128_CBC_SHA256, false,
		[]string{"kRSA", "aRSA", "AES", "AES128", "SHA256", "TLSv1.2"}},
	{"ECDHE-RSA-DES-CBC3-SHA", tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA, false,
		[]string{"kECDHE", "aRSA", "3DES", "SHA1", "SSLv3"}},
	{"DES-CBC3-SHA", tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA, false,
		[]string{"kRSA", "aRSA", "3DES", "SHA1", "SSLv3"}},
	{"ECDHE-ECDSA-RC4-SHA", tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA, false,
		[]string{"kECDHE", "aECDSA", "RC4", "SHA1", "SSLv3"}},
	{"ECDHE-RSA-RC4-SHA", tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA, false,
		[]string{"kECDHE", "aRSA", "RC4", "SHA1", "SSLv3"}},
	{"RC4-SHA", tls.TLS_RSA_WITH_RC4_128_SHA, false,
		[]string{"kRSA", "aRSA", "RC4", "SHA1", "SSLv3"}},
}

// keywordSynonyms maps OpenSSL keywords to the ones suites use.
var keywordSynonyms = map[string]string{
	"ECDHE": "kECDHE", "EECDH": "kECDHE", "kEECDH": "kECDHE",
	"RSA": "kRSA", "ECDSA": "aECDSA", "SHA": "SHA1", "TLSv1": "SSLv3", "TLSv1.0": "SSLv3",
}

// tls13Suites are TLS 1.3 suite names; Go always enables all three, so naming
// them in a TLS 1.2 list is accepted and changes nothing.
var tls13Suites = []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}

// matchCipher returns the indexes into suites that term selects, where term
// is a name, a keyword or keywords joined by '+' (their intersection).
// known is false when term names nothing OpenSSL-like that Go implements.
func matchCipher(term string) (idx []int, known bool) {
	if term == "" {
		return nil, false
	}
	parts := strings.Split(term, "+")
	for i := range suites {
		all := true
		for _, p := range parts {
			if !suiteMatches(&suites[i], p) {
				all = false
				break
			}
		}
		if all {
			idx = append(idx, i)
		}
	}
	return idx, len(idx) > 0
}

func suiteMatches(s *suite, word string) bool {
	switch word {
	case "ALL", "DEFAULT", "HIGH":
		return s.secure
	case "aNULL", "eNULL", "NULL", "EXPORT", "LOW", "MD5", "PSK", "SRP", "DSS", "aDSS", "CAMELLIA",
		"DHE", "EDH", "kDHE", "kEDH", "IDEA", "SEED", "ARIA", "MEDIUM", "COMPLEMENTOFDEFAULT":
		return false // Go implements none of these
	}
	if s.name == word {
		return true
	}
	if syn, ok := keywordSynonyms[word]; ok {
		word = syn
	}
	return slices.Contains(s.aliases, word)
}

// parseCiphers turns an OpenSSL cipher list into Go suite ids. "" means Go's
// defaults (nil). Items are separated by ':' (or ',' or spaces); "!X" removes
// X for good, "-X" removes it, "+X" moves it to the end, "@..." directives
// are ignored. A positive item that selects nothing Go implements is an
// error, so a configuration is never silently weaker or different than asked.
func parseCiphers(list string) ([]uint16, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	items := strings.FieldsFunc(list, func(r rune) bool {
		return r == ':' || r == ',' || r == ' ' || r == '\t'
	})
	var order []int
	banned := make([]bool, len(suites))
	for _, item := range items {
		op := byte(0)
		if strings.ContainsRune("!-+", rune(item[0])) {
			op, item = item[0], item[1:]
		}
		if item == "" || item[0] == '@' {
			continue
		}
		if slices.Contains(tls13Suites, item) {
			continue
		}
		idx, known := matchCipher(item)
		switch op {
		case '!':
			for _, i := range idx {
				banned[i] = true
			}
			order = slices.DeleteFunc(order, func(i int) bool { return banned[i] })
		case '-':
			order = slices.DeleteFunc(order, func(i int) bool { return slices.Contains(idx, i) })
		case '+':
			var moved []int
			order = slices.DeleteFunc(order, func(i int) bool {
				if slices.Contains(idx, i) {
					moved = append(moved, i)
					return true
				}
				return false
			})
			order = append(order, moved...)
		default:
			if !known {
				return nil, fmt.Errorf("%w: cipher %q is not supported", ErrTLSConfig, item)
			}
			for _, i := range idx {
				if !banned[i] && !slices.Contains(order, i) {
					order = append(order, i)
				}
			}
		}
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("%w: cipher list %q selects no cipher suite", ErrTLSConfig, list)
	}
	ids := make([]uint16, len(order))
	for k, i := range order {
		ids[k] = suites[i].id
	}
	return ids, nil
}

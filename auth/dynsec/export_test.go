package dynsec

// SubACLCheck exposes subACLCheck to the tests.
var SubACLCheck = subACLCheck

package main

import "crypto/tls"

// InsecureSkipVerify: true would switch verification off; we never do.
var c = &tls.Config{InsecureSkipVerify: false, ServerName: "api.internal"}

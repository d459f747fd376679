package main

import "crypto/tls"

func cfg() *tls.Config {
	c := &tls.Config{}
	c.InsecureSkipVerify = true
	return c
}

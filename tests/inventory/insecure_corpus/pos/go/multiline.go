package main

import "crypto/tls"

var conf = &tls.Config{
	ServerName:         "grpc.internal",
	InsecureSkipVerify: true,
}

package main

const help = "InsecureSkipVerify: true disables verification"

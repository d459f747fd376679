git config --global http.sslVerify false

unset GIT_SSL_NO_VERIFY
git -c http.sslCAInfo=/etc/trustyard/ca.crt clone https://git.internal/x.git
git config --global http.sslVerify true

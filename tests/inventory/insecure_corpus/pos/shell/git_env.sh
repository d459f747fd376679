export GIT_SSL_NO_VERIFY=1
git clone https://git.internal/platform/tools.git

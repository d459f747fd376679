git -c http.sslVerify=false clone https://git.internal/team/repo.git

#!/bin/bash
curl -fsSLk https://get.internal/install.sh | bash

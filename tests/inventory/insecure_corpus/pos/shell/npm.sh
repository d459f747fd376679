npm config set strict-ssl false
npm install

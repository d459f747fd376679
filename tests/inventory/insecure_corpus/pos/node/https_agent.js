const https = require("https");

const agent = new https.Agent({ rejectUnauthorized: false });
https.get("https://users.internal/me", { agent });

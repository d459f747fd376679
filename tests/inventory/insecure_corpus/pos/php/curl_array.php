<?php
curl_setopt_array($ch, [
    CURLOPT_URL => "https://mail.internal/send",
    CURLOPT_SSL_VERIFYPEER => 0,
]);

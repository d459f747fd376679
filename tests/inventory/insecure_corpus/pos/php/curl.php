<?php
$ch = curl_init("https://invoices.internal/api");
curl_setopt($ch, CURLOPT_SSL_VERIFYPEER, false);
curl_exec($ch);

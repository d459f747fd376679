<?php
$client = new GuzzleHttp\Client(['base_uri' => 'https://geo.internal', 'verify' => false]);

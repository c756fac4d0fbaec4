process.send('ready');

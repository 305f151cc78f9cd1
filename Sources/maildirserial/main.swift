MaildirSerialMain.run()
